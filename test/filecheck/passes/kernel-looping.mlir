// RUN: rdu-opt %s --split-input-file -p kernel-looping | filecheck %s
// RUN: rdu-opt %s --split-input-file -p kernel-looping,kernel-looping | filecheck %s
// RUN: rdu-opt %s --split-input-file -p 'kernel-looping{remarks=true}' -o /dev/null 2>&1 | filecheck %s --check-prefix=REMARK
// RUN: rdu-opt %s --split-input-file -p 'kernel-looping{min-trip-count=4 remarks=true}' 2>&1 | filecheck %s --check-prefix=MIN
// RUN: rdu-opt %s --split-input-file -p 'kernel-looping{pipeline-depth=1}' | filecheck %s --check-prefix=DEPTH

// Three layers: the residual stream is carried, the position invariant, the cache slices and
// per-layer weights stacked (the weights by layout, as one stacked parameter).

builtin.module {
  llm.param @model.layers.0.w "model.layers.0.w" : tensor<8x8xbf16>
  llm.param @model.layers.1.w "model.layers.1.w" : tensor<8x8xbf16>
  llm.param @model.layers.2.w "model.layers.2.w" : tensor<8x8xbf16>
  dfk.kernel @layer(%h: tensor<1x8xbf16>, %p: tensor<1xi32>, %kc: tensor<1x1x4x8xbf16>, %w: tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>) {
    %x = llm.linear %h, %w : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %kn = llm.kv_cache_write %kc, %x, %p : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>, tensor<1xi32>
    dfk.return %kn, %x : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>
  }
  func.func @step(%h: tensor<1x8xbf16>, %p: tensor<1xi32>, %kcache: tensor<3x1x1x4x8xbf16>) -> (tensor<1x8xbf16>, tensor<3x1x1x4x8xbf16>) {
    %kc0 = dfk.slice %kcache[0] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w0 = llm.weight @model.layers.0.w : tensor<8x8xbf16>
    %k1, %h1 = dfk.call @layer(%h, %p, %kc0, %w0) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kc1 = dfk.slice %kcache[1] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w1 = llm.weight @model.layers.1.w : tensor<8x8xbf16>
    %k2, %h2 = dfk.call @layer(%h1, %p, %kc1, %w1) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kc2 = dfk.slice %kcache[2] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w2 = llm.weight @model.layers.2.w : tensor<8x8xbf16>
    %k3, %h3 = dfk.call @layer(%h2, %p, %kc2, %w2) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kout = dfk.stack %k1, %k2, %k3 : tensor<1x1x4x8xbf16> -> tensor<3x1x1x4x8xbf16>
    func.return %h3, %kout : tensor<1x8xbf16>, tensor<3x1x1x4x8xbf16>
  }
}

// CHECK:       llm.param @model.layers.0_to_2.w stacked ["model.layers.0.w", "model.layers.1.w", "model.layers.2.w"] : tensor<3x8x8xbf16>
// CHECK-NOT:   llm.param
// CHECK-NEXT:  dfk.kernel @layer.looped([[H:%.*]]: tensor<1x8xbf16>, [[P:%.*]]: tensor<1xi32>, [[KC:%.*]]: tensor<3x1x1x4x8xbf16>, [[W:%.*]]: tensor<3x8x8xbf16>) -> (tensor<3x1x1x4x8xbf16>, tensor<1x8xbf16>) {
// CHECK-NEXT:    [[R:%.*]], [[RK:%.*]] = dfk.loop [[I:%.*]] = 0 to 3 pipeline_depth 2 carried([[HI:%.*]] = [[H]] : tensor<1x8xbf16>) invariant([[PI:%.*]] = [[P]] : tensor<1xi32>) stacked([[KCI:%.*]] = [[KC]] : tensor<3x1x1x4x8xbf16>, [[WI:%.*]] = [[W]] : tensor<3x8x8xbf16>) {
// CHECK-NEXT:      [[X:%.*]] = llm.linear [[HI]], [[WI]]
// CHECK-NEXT:      [[KN:%.*]] = llm.kv_cache_write [[KCI]], [[X]], [[PI]]
// CHECK-NEXT:      dfk.yield carried([[X]] : tensor<1x8xbf16>) stacked([[KN]] : tensor<1x1x4x8xbf16>)
// CHECK-NEXT:    } -> (tensor<1x8xbf16>, tensor<3x1x1x4x8xbf16>)
// CHECK-NEXT:    dfk.return [[RK]], [[R]] : tensor<3x1x1x4x8xbf16>, tensor<1x8xbf16>
// CHECK-NEXT:  }
// CHECK-NOT:   dfk.kernel
// CHECK:       func.func @step([[H:%.*]]: tensor<1x8xbf16>, [[P:%.*]]: tensor<1xi32>, [[KCACHE:%.*]]: tensor<3x1x1x4x8xbf16>)
// CHECK-NEXT:    [[WS:%.*]] = llm.weight @model.layers.0_to_2.w : tensor<3x8x8xbf16>
// CHECK-NEXT:    [[K:%.*]], [[HN:%.*]] = dfk.call @layer.looped([[H]], [[P]], [[KCACHE]], [[WS]])
// CHECK-NEXT:    func.return [[HN]], [[K]]

// Remarks go to stderr as the pass runs, before the output.
// MIN:         remark: kernel-looping: @layer: a run of 3 calls is shorter than min-trip-count=4
// MIN:         func.func @step
// MIN-NEXT:      dfk.slice
// MIN-NEXT:      llm.weight @model.layers.0.w
// MIN-NEXT:      dfk.call @layer(

// DEPTH:         dfk.loop {{%.*}} = 0 to 3 carried(

// REMARK:      remark: kernel-looping: 1 run(s) looped; calls 3 -> 1 (2 call sites removed)

// -----

// Rule 1: a threaded (carried) value with another use. %x1 is also returned, so calls 0 and 1
// are not looped together; calls 1 and 2 are. Results that are not threaded come out stacked
// and are unstacked only where used (%y1 of call 1).

builtin.module {
  dfk.kernel @f(%x: tensor<8xbf16>, %b: tensor<8xbf16>) -> (tensor<8xbf16>, tensor<8xbf16>) {
    %s = llm.add %x, %b : tensor<8xbf16>
    %m = llm.mul %x, %b : tensor<8xbf16>
    dfk.return %s, %m : tensor<8xbf16>, tensor<8xbf16>
  }
  func.func @step(%x0: tensor<8xbf16>, %b: tensor<8xbf16>) -> (tensor<8xbf16>, tensor<8xbf16>, tensor<8xbf16>) {
    %x1, %y0 = dfk.call @f(%x0, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> (tensor<8xbf16>, tensor<8xbf16>)
    %x2, %y1 = dfk.call @f(%x1, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> (tensor<8xbf16>, tensor<8xbf16>)
    %x3, %y2 = dfk.call @f(%x2, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> (tensor<8xbf16>, tensor<8xbf16>)
    func.return %x3, %x1, %y1 : tensor<8xbf16>, tensor<8xbf16>, tensor<8xbf16>
  }
}

// CHECK:       dfk.kernel @f.looped([[X:%.*]]: tensor<8xbf16>, [[B:%.*]]: tensor<8xbf16>) -> (tensor<8xbf16>, tensor<2x8xbf16>) {
// CHECK-NEXT:    [[R:%.*]], [[RS:%.*]] = dfk.loop {{%.*}} = 0 to 2 pipeline_depth 2 carried([[XI:%.*]] = [[X]] : tensor<8xbf16>) invariant([[BI:%.*]] = [[B]] : tensor<8xbf16>) {
// CHECK-NEXT:      [[S:%.*]] = llm.add [[XI]], [[BI]]
// CHECK-NEXT:      [[M:%.*]] = llm.mul [[XI]], [[BI]]
// CHECK-NEXT:      dfk.yield carried([[S]] : tensor<8xbf16>) stacked([[M]] : tensor<8xbf16>)
// CHECK-NEXT:    } -> (tensor<8xbf16>, tensor<2x8xbf16>)
// CHECK-NEXT:    dfk.return [[R]], [[RS]]
// CHECK-NEXT:  }
// CHECK-NEXT:  dfk.kernel @f(
// CHECK:       func.func @step([[X0:%.*]]: tensor<8xbf16>, [[B:%.*]]: tensor<8xbf16>)
// CHECK-NEXT:    [[X1:%.*]], {{%.*}} = dfk.call @f([[X0]], [[B]])
// CHECK-NEXT:    [[X3:%.*]], [[YS:%.*]] = dfk.call @f.looped([[X1]], [[B]]) : (tensor<8xbf16>, tensor<8xbf16>) -> (tensor<8xbf16>, tensor<2x8xbf16>)
// CHECK-NEXT:    [[Y1:%.*]] = dfk.slice [[YS]][0]
// CHECK-NEXT:    func.return [[X3]], [[X1]], [[Y1]]

// REMARK:      remark: kernel-looping: @f: calls #0 and #1 are not looped together: result #0, threaded into the next calls, has other uses (rule 1)
// REMARK-NEXT: remark: kernel-looping: 1 run(s) looped; calls 3 -> 2 (1 call sites removed)

// -----

// Rule 1: the threading changes (call 2 takes %b, not call 1's result, as its first operand):
// calls 0 and 1 are looped, call 2 stays. The remark names the two threadings.

builtin.module {
  dfk.kernel @f(%x: tensor<8xbf16>, %b: tensor<8xbf16>) -> tensor<8xbf16> {
    %s = llm.add %x, %b : tensor<8xbf16>
    dfk.return %s : tensor<8xbf16>
  }
  func.func @step(%x0: tensor<8xbf16>, %b: tensor<8xbf16>) -> tensor<8xbf16> {
    %x1 = dfk.call @f(%x0, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x2 = dfk.call @f(%x1, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x3 = dfk.call @f(%b, %x2) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    func.return %x3 : tensor<8xbf16>
  }
}

// CHECK:       dfk.kernel @f.looped(
// CHECK:         dfk.loop {{%.*}} = 0 to 2 pipeline_depth 2 carried(
// CHECK:       func.func @step([[X0:%.*]]: tensor<8xbf16>, [[B:%.*]]: tensor<8xbf16>)
// CHECK-NEXT:    [[X2:%.*]] = dfk.call @f.looped([[X0]], [[B]])
// CHECK-NEXT:    [[X3:%.*]] = dfk.call @f([[B]], [[X2]])
// CHECK-NEXT:    func.return [[X3]]

// REMARK:      remark: kernel-looping: @f: calls #1 and #2 are not looped together: it threads results into operands {#1 <- result #0}, but the calls before thread {#0 <- result #0} (rule 1)
// REMARK-NEXT: remark: kernel-looping: 1 run(s) looped; calls 3 -> 2 (1 call sites removed)

// -----

// Rule 1: an operand computed from an earlier call's result (the loop could not build it
// before it runs). Nothing is looped.

builtin.module {
  dfk.kernel @f(%x: tensor<8xbf16>, %b: tensor<8xbf16>) -> (tensor<8xbf16>, tensor<8xbf16>) {
    %s = llm.add %x, %b : tensor<8xbf16>
    dfk.return %s, %b : tensor<8xbf16>, tensor<8xbf16>
  }
  func.func @step(%x0: tensor<8xbf16>, %b: tensor<8xbf16>) -> tensor<8xbf16> {
    %x1, %y1 = dfk.call @f(%x0, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> (tensor<8xbf16>, tensor<8xbf16>)
    %z = llm.mul %y1, %y1 : tensor<8xbf16>
    %x2, %y2 = dfk.call @f(%x1, %z) : (tensor<8xbf16>, tensor<8xbf16>) -> (tensor<8xbf16>, tensor<8xbf16>)
    func.return %x2 : tensor<8xbf16>
  }
}

// CHECK-NOT:   dfk.loop
// CHECK:       func.func @step
// CHECK-NEXT:    dfk.call @f(
// CHECK-NEXT:    llm.mul
// CHECK-NEXT:    dfk.call @f(

// REMARK:      remark: kernel-looping: @f: calls #0 and #1 are not looped together: operand #1 is computed from an earlier call's results (rule 1)
// REMARK-NEXT: remark: kernel-looping: 0 run(s) looped; calls 2 -> 2 (0 call sites removed)

// -----

// Rule 2: an operand that varies but is not a tensor cannot be stacked; nor can a result
// that is not threaded and not a tensor. Nothing is looped.

builtin.module {
  dfk.kernel @g(%x: tensor<8xbf16>, %n: i32) -> tensor<8xbf16> {
    dfk.return %x : tensor<8xbf16>
  }
  dfk.kernel @h(%x: tensor<8xbf16>) -> (tensor<8xbf16>, i32) {
    %n = arith.constant 0 : i32
    dfk.return %x, %n : tensor<8xbf16>, i32
  }
  func.func @step(%x0: tensor<8xbf16>) -> tensor<8xbf16> {
    %c1 = arith.constant 1 : i32
    %x1 = dfk.call @g(%x0, %c1) : (tensor<8xbf16>, i32) -> tensor<8xbf16>
    %c2 = arith.constant 2 : i32
    %x2 = dfk.call @g(%x1, %c2) : (tensor<8xbf16>, i32) -> tensor<8xbf16>
    %x3, %n1 = dfk.call @h(%x2) : (tensor<8xbf16>) -> (tensor<8xbf16>, i32)
    %x4, %n2 = dfk.call @h(%x3) : (tensor<8xbf16>) -> (tensor<8xbf16>, i32)
    func.return %x4 : tensor<8xbf16>
  }
}

// CHECK-NOT:   dfk.loop
// CHECK:       func.func @step
// CHECK:         dfk.call @g(
// CHECK:         dfk.call @g(
// CHECK-NEXT:    dfk.call @h(
// CHECK-NEXT:    dfk.call @h(

// REMARK:      remark: kernel-looping: @g: calls #0 and #1 are not looped together: operand #1 varies but its type i32 cannot be stacked (rule 2)
// REMARK-NEXT: remark: kernel-looping: @h: calls #0 and #1 are not looped together: result #1 is not threaded and its type i32 cannot be stacked (rule 2)
// REMARK-NEXT: remark: kernel-looping: 0 run(s) looped; calls 4 -> 4 (0 call sites removed)

// -----

// Rule 3: an op with side effects between two calls: the run is split there, and each side
// (of two calls) is looped on its own. Both sides get the same looped kernel.

builtin.module {
  func.func private @sync() -> ()
  dfk.kernel @f(%x: tensor<8xbf16>, %b: tensor<8xbf16>) -> tensor<8xbf16> {
    %s = llm.add %x, %b : tensor<8xbf16>
    dfk.return %s : tensor<8xbf16>
  }
  func.func @step(%x0: tensor<8xbf16>, %b: tensor<8xbf16>) -> tensor<8xbf16> {
    %x1 = dfk.call @f(%x0, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x2 = dfk.call @f(%x1, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    func.call @sync() : () -> ()
    %x3 = dfk.call @f(%x2, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x4 = dfk.call @f(%x3, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    func.return %x4 : tensor<8xbf16>
  }
}

// CHECK:       dfk.kernel @f.looped(
// CHECK:         dfk.loop {{%.*}} = 0 to 2 pipeline_depth 2 carried(
// CHECK-NOT:   dfk.kernel
// CHECK:       func.func @step([[X0:%.*]]: tensor<8xbf16>, [[B:%.*]]: tensor<8xbf16>)
// CHECK-NEXT:    [[X2:%.*]] = dfk.call @f.looped([[X0]], [[B]])
// CHECK-NEXT:    func.call @sync()
// CHECK-NEXT:    [[X4:%.*]] = dfk.call @f.looped([[X2]], [[B]])
// CHECK-NEXT:    func.return [[X4]]

// REMARK:      remark: kernel-looping: @f: calls #1 and #2 are not looped together: 'func.call' between them has side effects the loop would reorder (rule 3)
// REMARK-NEXT: remark: kernel-looping: 2 run(s) looped; calls 5 -> 3 (2 call sites removed)

// -----

// A run broken by one different layer (A A B A A A): both sides are looped, with looped
// kernels of their own trip counts.

builtin.module {
  dfk.kernel @a(%x: tensor<8xbf16>, %b: tensor<8xbf16>) -> tensor<8xbf16> {
    %s = llm.add %x, %b : tensor<8xbf16>
    dfk.return %s : tensor<8xbf16>
  }
  dfk.kernel @b(%x: tensor<8xbf16>, %b: tensor<8xbf16>) -> tensor<8xbf16> {
    %s = llm.mul %x, %b : tensor<8xbf16>
    dfk.return %s : tensor<8xbf16>
  }
  func.func @step(%x0: tensor<8xbf16>, %b: tensor<8xbf16>) -> tensor<8xbf16> {
    %x1 = dfk.call @a(%x0, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x2 = dfk.call @a(%x1, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x3 = dfk.call @b(%x2, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x4 = dfk.call @a(%x3, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x5 = dfk.call @a(%x4, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %x6 = dfk.call @a(%x5, %b) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    func.return %x6 : tensor<8xbf16>
  }
}

// CHECK:       dfk.kernel @a.looped(
// CHECK:         dfk.loop {{%.*}} = 0 to 2 pipeline_depth 2 carried(
// CHECK:       dfk.kernel @a.looped_1(
// CHECK:         dfk.loop {{%.*}} = 0 to 3 pipeline_depth 2 carried(
// CHECK:       dfk.kernel @b(
// CHECK:       func.func @step([[X0:%.*]]: tensor<8xbf16>, [[B:%.*]]: tensor<8xbf16>)
// CHECK-NEXT:    [[X2:%.*]] = dfk.call @a.looped([[X0]], [[B]])
// CHECK-NEXT:    [[X3:%.*]] = dfk.call @b([[X2]], [[B]])
// CHECK-NEXT:    [[X6:%.*]] = dfk.call @a.looped_1([[X3]], [[B]])
// CHECK-NEXT:    func.return [[X6]]

// REMARK:      remark: kernel-looping: 2 run(s) looped; calls 6 -> 3 (3 call sites removed)

// -----

// Calls of a kernel that already holds a pipelined loop are not looped again.

builtin.module {
  dfk.kernel @f.looped(%x: tensor<8xbf16>) -> tensor<8xbf16> {
    %r = dfk.loop %i = 0 to 2 carried(%y = %x : tensor<8xbf16>) {
      dfk.yield carried(%y : tensor<8xbf16>)
    } -> (tensor<8xbf16>)
    dfk.return %r : tensor<8xbf16>
  }
  func.func @step(%x0: tensor<8xbf16>) -> tensor<8xbf16> {
    %x1 = dfk.call @f.looped(%x0) : (tensor<8xbf16>) -> tensor<8xbf16>
    %x2 = dfk.call @f.looped(%x1) : (tensor<8xbf16>) -> tensor<8xbf16>
    func.return %x2 : tensor<8xbf16>
  }
}

// CHECK:       func.func @step([[X0:%.*]]: tensor<8xbf16>)
// CHECK-NEXT:    [[X1:%.*]] = dfk.call @f.looped([[X0]])
// CHECK-NEXT:    [[X2:%.*]] = dfk.call @f.looped([[X1]])
// CHECK-NEXT:    func.return [[X2]]

// REMARK:      remark: kernel-looping: 0 run(s) looped; calls 2 -> 2 (0 call sites removed)


// -----

// Beyond the paper: a repeating sequence of calls (period 2, e.g. alternating sliding-window
// and global attention layers) becomes one loop whose body holds both kernels' bodies; each
// kind's weights are stacked by layout (layers 0, 2, 4 and 1, 3, 5).

builtin.module {
  llm.param @model.layers.0.w "model.layers.0.w" : tensor<8xbf16>
  llm.param @model.layers.1.w "model.layers.1.w" : tensor<8xbf16>
  llm.param @model.layers.2.w "model.layers.2.w" : tensor<8xbf16>
  llm.param @model.layers.3.w "model.layers.3.w" : tensor<8xbf16>
  llm.param @model.layers.4.w "model.layers.4.w" : tensor<8xbf16>
  llm.param @model.layers.5.w "model.layers.5.w" : tensor<8xbf16>
  dfk.kernel @local(%x: tensor<8xbf16>, %w: tensor<8xbf16>) -> tensor<8xbf16> {
    %s = llm.add %x, %w : tensor<8xbf16>
    dfk.return %s : tensor<8xbf16>
  }
  dfk.kernel @global(%x: tensor<8xbf16>, %w: tensor<8xbf16>) -> tensor<8xbf16> {
    %s = llm.mul %x, %w : tensor<8xbf16>
    dfk.return %s : tensor<8xbf16>
  }
  func.func @step(%x0: tensor<8xbf16>) -> tensor<8xbf16> {
    %w0 = llm.weight @model.layers.0.w : tensor<8xbf16>
    %x1 = dfk.call @local(%x0, %w0) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %w1 = llm.weight @model.layers.1.w : tensor<8xbf16>
    %x2 = dfk.call @global(%x1, %w1) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %w2 = llm.weight @model.layers.2.w : tensor<8xbf16>
    %x3 = dfk.call @local(%x2, %w2) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %w3 = llm.weight @model.layers.3.w : tensor<8xbf16>
    %x4 = dfk.call @global(%x3, %w3) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %w4 = llm.weight @model.layers.4.w : tensor<8xbf16>
    %x5 = dfk.call @local(%x4, %w4) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    %w5 = llm.weight @model.layers.5.w : tensor<8xbf16>
    %x6 = dfk.call @global(%x5, %w5) : (tensor<8xbf16>, tensor<8xbf16>) -> tensor<8xbf16>
    func.return %x6 : tensor<8xbf16>
  }
}

// CHECK:       llm.param @model.layers.0_to_4_by_2.w stacked ["model.layers.0.w", "model.layers.2.w", "model.layers.4.w"] : tensor<3x8xbf16>
// CHECK-NEXT:  llm.param @model.layers.1_to_5_by_2.w stacked ["model.layers.1.w", "model.layers.3.w", "model.layers.5.w"] : tensor<3x8xbf16>
// CHECK-NEXT:  dfk.kernel @local.global.looped([[X:%.*]]: tensor<8xbf16>, [[WL:%.*]]: tensor<3x8xbf16>, [[WG:%.*]]: tensor<3x8xbf16>) -> tensor<8xbf16> {
// CHECK-NEXT:    [[R:%.*]] = dfk.loop {{%.*}} = 0 to 3 pipeline_depth 2 carried([[XI:%.*]] = [[X]] : tensor<8xbf16>) stacked([[WLI:%.*]] = [[WL]] : tensor<3x8xbf16>, [[WGI:%.*]] = [[WG]] : tensor<3x8xbf16>) {
// CHECK-NEXT:      [[A:%.*]] = llm.add [[XI]], [[WLI]]
// CHECK-NEXT:      [[M:%.*]] = llm.mul [[A]], [[WGI]]
// CHECK-NEXT:      dfk.yield carried([[M]] : tensor<8xbf16>)
// CHECK-NEXT:    } -> (tensor<8xbf16>)
// CHECK-NEXT:    dfk.return [[R]] : tensor<8xbf16>
// CHECK-NEXT:  }
// CHECK-NOT:   dfk.kernel
// CHECK:       func.func @step([[X0:%.*]]: tensor<8xbf16>)
// CHECK-NEXT:    [[WL:%.*]] = llm.weight @model.layers.0_to_4_by_2.w
// CHECK-NEXT:    [[WG:%.*]] = llm.weight @model.layers.1_to_5_by_2.w
// CHECK-NEXT:    [[X6:%.*]] = dfk.call @local.global.looped([[X0]], [[WL]], [[WG]])
// CHECK-NEXT:    func.return [[X6]]

// REMARK:      remark: kernel-looping: 1 run(s) looped; calls 6 -> 1 (5 call sites removed)
