// RUN: xdsl-opt %s --split-input-file -p kernel-looping | filecheck %s
// RUN: xdsl-opt %s --split-input-file -p kernel-looping,kernel-looping | filecheck %s
// RUN: rdu-opt %s --split-input-file -p 'kernel-looping{remarks=true}' -o /dev/null 2>&1 | filecheck %s --check-prefix=REMARK
// RUN: rdu-opt %s --split-input-file -p 'kernel-looping{min-trip-count=4 remarks=true}' -o /dev/null 2>&1 | filecheck %s --check-prefix=MIN

// Kernel looping of func.call: the run analysis is the one of dfk.call (same rules, same
// remarks); a run becomes an scf.for that calls the function, with upstream ops only
// (test/unit/test_kernel_looping_func.py has upstream mlir-opt verify this output, with no
// unregistered dialect, and checks the semantics on random inputs).

// A value threaded through four calls: one scf.for whose iter_args carry it.

func.func private @layer(%x: tensor<4xf32>, %w: tensor<4xf32>) -> tensor<4xf32> {
  %y = arith.mulf %x, %w : tensor<4xf32>
  %z = arith.addf %y, %x : tensor<4xf32>
  func.return %z : tensor<4xf32>
}
func.func @chain(%x0: tensor<4xf32>, %w: tensor<4xf32>) -> tensor<4xf32> {
  %x1 = func.call @layer(%x0, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %x2 = func.call @layer(%x1, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %x3 = func.call @layer(%x2, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %x4 = func.call @layer(%x3, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %x4 : tensor<4xf32>
}

// CHECK-LABEL: func.func @chain
// CHECK-SAME:    ([[X0:%.*]]: tensor<4xf32>, [[W:%.*]]: tensor<4xf32>)
// CHECK-NEXT:    [[C0:%.*]] = arith.constant 0 : index
// CHECK-NEXT:    [[C4:%.*]] = arith.constant 4 : index
// CHECK-NEXT:    [[C1:%.*]] = arith.constant 1 : index
// CHECK-NEXT:    [[X4:%.*]] = scf.for [[I:%.*]] = [[C0]] to [[C4]] step [[C1]] iter_args([[X:%.*]] = [[X0]]) -> (tensor<4xf32>) {
// CHECK-NEXT:      [[Y:%.*]] = func.call @layer([[X]], [[W]]) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:      scf.yield [[Y]] : tensor<4xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return [[X4]] : tensor<4xf32>

// REMARK:      remark: kernel-looping: 1 run(s) looped; calls 4 -> 1 (3 call sites removed)

// MIN:         remark: kernel-looping: 1 run(s) looped; calls 4 -> 1 (3 call sites removed)

// -----

// Invariant (%b), varying (%v0..%v2: stacked once before the loop with tensor.empty and
// tensor.insert_slice; %w0..%w2: consecutive slices of %ws, read from %ws itself) operands,
// and a second result used after the run (%y0, %y2: collected per trip into a stacked
// tensor carried in iter_args, sliced out after the loop).

func.func private @f(%x: tensor<2x4xf32>, %b: tensor<2x4xf32>, %v: tensor<2x4xf32>, %w: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>) {
  %s = arith.addf %x, %v : tensor<2x4xf32>
  %m = arith.mulf %s, %w : tensor<2x4xf32>
  %n = arith.addf %m, %b : tensor<2x4xf32>
  func.return %n, %s : tensor<2x4xf32>, tensor<2x4xf32>
}
func.func @operands(%x0: tensor<2x4xf32>, %b: tensor<2x4xf32>, %ws: tensor<3x2x4xf32>, %v0: tensor<2x4xf32>, %v1: tensor<2x4xf32>, %v2: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) {
  %w0 = tensor.extract_slice %ws[0, 0, 0] [1, 2, 4] [1, 1, 1] : tensor<3x2x4xf32> to tensor<2x4xf32>
  %x1, %y0 = func.call @f(%x0, %b, %v0, %w0) : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>)
  %w1 = tensor.extract_slice %ws[1, 0, 0] [1, 2, 4] [1, 1, 1] : tensor<3x2x4xf32> to tensor<2x4xf32>
  %x2, %y1 = func.call @f(%x1, %b, %v1, %w1) : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>)
  %w2 = tensor.extract_slice %ws[2, 0, 0] [1, 2, 4] [1, 1, 1] : tensor<3x2x4xf32> to tensor<2x4xf32>
  %x3, %y2 = func.call @f(%x2, %b, %v2, %w2) : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>)
  func.return %x3, %y0, %y2 : tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>
}

// CHECK-LABEL: func.func @operands
// CHECK-SAME:    ([[X0:%.*]]: tensor<2x4xf32>, [[B:%.*]]: tensor<2x4xf32>, [[WS:%.*]]: tensor<3x2x4xf32>, [[V0:%.*]]: tensor<2x4xf32>, [[V1:%.*]]: tensor<2x4xf32>, [[V2:%.*]]: tensor<2x4xf32>)
// CHECK-NEXT:    [[C0:%.*]] = arith.constant 0 : index
// CHECK-NEXT:    [[C3:%.*]] = arith.constant 3 : index
// CHECK-NEXT:    [[C1:%.*]] = arith.constant 1 : index
// CHECK-NEXT:    [[E:%.*]] = tensor.empty() : tensor<3x2x4xf32>
// CHECK-NEXT:    [[S0:%.*]] = tensor.insert_slice [[V0]] into [[E]][0, 0, 0] [1, 2, 4] [1, 1, 1] : tensor<2x4xf32> into tensor<3x2x4xf32>
// CHECK-NEXT:    [[S1:%.*]] = tensor.insert_slice [[V1]] into [[S0]][1, 0, 0] [1, 2, 4] [1, 1, 1] : tensor<2x4xf32> into tensor<3x2x4xf32>
// CHECK-NEXT:    [[VS:%.*]] = tensor.insert_slice [[V2]] into [[S1]][2, 0, 0] [1, 2, 4] [1, 1, 1] : tensor<2x4xf32> into tensor<3x2x4xf32>
// CHECK-NEXT:    [[YE:%.*]] = tensor.empty() : tensor<3x2x4xf32>
// CHECK-NEXT:    [[X3:%.*]], [[YS:%.*]] = scf.for [[I:%.*]] = [[C0]] to [[C3]] step [[C1]] iter_args([[X:%.*]] = [[X0]], [[ACC:%.*]] = [[YE]]) -> (tensor<2x4xf32>, tensor<3x2x4xf32>) {
// CHECK-NEXT:      [[V:%.*]] = tensor.extract_slice [[VS]][[[I]], 0, 0] [1, 2, 4] [1, 1, 1] : tensor<3x2x4xf32> to tensor<2x4xf32>
// CHECK-NEXT:      [[W:%.*]] = tensor.extract_slice [[WS]][[[I]], 0, 0] [1, 2, 4] [1, 1, 1] : tensor<3x2x4xf32> to tensor<2x4xf32>
// CHECK-NEXT:      [[N:%.*]], [[S:%.*]] = func.call @f([[X]], [[B]], [[V]], [[W]])
// CHECK-NEXT:      [[ACC1:%.*]] = tensor.insert_slice [[S]] into [[ACC]][[[I]], 0, 0] [1, 2, 4] [1, 1, 1] : tensor<2x4xf32> into tensor<3x2x4xf32>
// CHECK-NEXT:      scf.yield [[N]], [[ACC1]] : tensor<2x4xf32>, tensor<3x2x4xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    [[Y0:%.*]] = tensor.extract_slice [[YS]][0, 0, 0] [1, 2, 4] [1, 1, 1] : tensor<3x2x4xf32> to tensor<2x4xf32>
// CHECK-NEXT:    [[Y2:%.*]] = tensor.extract_slice [[YS]][2, 0, 0] [1, 2, 4] [1, 1, 1] : tensor<3x2x4xf32> to tensor<2x4xf32>
// CHECK-NEXT:    func.return [[X3]], [[Y0]], [[Y2]]

// REMARK-NEXT: remark: kernel-looping: 1 run(s) looped; calls 3 -> 1 (2 call sites removed)

// MIN-NEXT:    remark: kernel-looping: @f: a run of 3 calls is shorter than min-trip-count=4
// MIN-NEXT:    remark: kernel-looping: 0 run(s) looped; calls 3 -> 3 (0 call sites removed)

// -----

// Rule 3: a side-effecting op (a store) between calls 1 and 2 splits the run; each side of
// two calls is looped on its own.

func.func private @g(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = arith.addf %x, %x : tensor<4xf32>
  func.return %y : tensor<4xf32>
}
func.func @side_effect(%x0: tensor<4xf32>, %buf: memref<f32>, %c: f32) -> tensor<4xf32> {
  %x1 = func.call @g(%x0) : (tensor<4xf32>) -> tensor<4xf32>
  %x2 = func.call @g(%x1) : (tensor<4xf32>) -> tensor<4xf32>
  memref.store %c, %buf[] : memref<f32>
  %x3 = func.call @g(%x2) : (tensor<4xf32>) -> tensor<4xf32>
  %x4 = func.call @g(%x3) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %x4 : tensor<4xf32>
}

// CHECK-LABEL: func.func @side_effect
// CHECK-SAME:    ([[X0:%.*]]: tensor<4xf32>, [[BUF:%.*]]: memref<f32>, [[C:%.*]]: f32)
// CHECK:         [[X2:%.*]] = scf.for {{.*}} iter_args({{%.*}} = [[X0]])
// CHECK-NEXT:      func.call @g(
// CHECK-NEXT:      scf.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    memref.store [[C]], [[BUF]][] : memref<f32>
// CHECK:         [[X4:%.*]] = scf.for {{.*}} iter_args({{%.*}} = [[X2]])
// CHECK-NEXT:      func.call @g(
// CHECK-NEXT:      scf.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return [[X4]]

// REMARK-NEXT: remark: kernel-looping: @g: calls #1 and #2 are not looped together: 'memref.store' between them has side effects the loop would reorder (rule 3)
// REMARK-NEXT: remark: kernel-looping: 2 run(s) looped; calls 4 -> 2 (2 call sites removed)

// -----

// Period 2 (alternating kinds, A B A B A B): one loop of three trips whose body makes both
// calls; each kind's weights are every other slice of %ws (offsets 2i and 2i + 1).

func.func private @local(%x: tensor<4xf32>, %w: tensor<4xf32>) -> tensor<4xf32> {
  %y = arith.addf %x, %w : tensor<4xf32>
  func.return %y : tensor<4xf32>
}
func.func private @global(%x: tensor<4xf32>, %w: tensor<4xf32>) -> tensor<4xf32> {
  %y = arith.mulf %x, %w : tensor<4xf32>
  func.return %y : tensor<4xf32>
}
func.func @period_two(%x0: tensor<4xf32>, %ws: tensor<6x4xf32>) -> tensor<4xf32> {
  %w0 = tensor.extract_slice %ws[0, 0] [1, 4] [1, 1] : tensor<6x4xf32> to tensor<4xf32>
  %x1 = func.call @local(%x0, %w0) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %w1 = tensor.extract_slice %ws[1, 0] [1, 4] [1, 1] : tensor<6x4xf32> to tensor<4xf32>
  %x2 = func.call @global(%x1, %w1) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %w2 = tensor.extract_slice %ws[2, 0] [1, 4] [1, 1] : tensor<6x4xf32> to tensor<4xf32>
  %x3 = func.call @local(%x2, %w2) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %w3 = tensor.extract_slice %ws[3, 0] [1, 4] [1, 1] : tensor<6x4xf32> to tensor<4xf32>
  %x4 = func.call @global(%x3, %w3) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %w4 = tensor.extract_slice %ws[4, 0] [1, 4] [1, 1] : tensor<6x4xf32> to tensor<4xf32>
  %x5 = func.call @local(%x4, %w4) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %w5 = tensor.extract_slice %ws[5, 0] [1, 4] [1, 1] : tensor<6x4xf32> to tensor<4xf32>
  %x6 = func.call @global(%x5, %w5) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %x6 : tensor<4xf32>
}

// CHECK-LABEL: func.func @period_two
// CHECK-SAME:    ([[X0:%.*]]: tensor<4xf32>, [[WS:%.*]]: tensor<6x4xf32>)
// CHECK-NEXT:    [[C0:%.*]] = arith.constant 0 : index
// CHECK-NEXT:    [[C3:%.*]] = arith.constant 3 : index
// CHECK-NEXT:    [[C1:%.*]] = arith.constant 1 : index
// CHECK-NEXT:    [[C2:%.*]] = arith.constant 2 : index
// CHECK-NEXT:    [[X6:%.*]] = scf.for [[I:%.*]] = [[C0]] to [[C3]] step [[C1]] iter_args([[X:%.*]] = [[X0]]) -> (tensor<4xf32>) {
// CHECK-NEXT:      [[EVEN:%.*]] = arith.muli [[I]], [[C2]] : index
// CHECK-NEXT:      [[WL:%.*]] = tensor.extract_slice [[WS]][[[EVEN]], 0] [1, 4] [1, 1] : tensor<6x4xf32> to tensor<4xf32>
// CHECK-NEXT:      [[L:%.*]] = func.call @local([[X]], [[WL]])
// CHECK-NEXT:      [[ODD:%.*]] = arith.addi [[EVEN]], [[C1]] : index
// CHECK-NEXT:      [[WG:%.*]] = tensor.extract_slice [[WS]][[[ODD]], 0] [1, 4] [1, 1] : tensor<6x4xf32> to tensor<4xf32>
// CHECK-NEXT:      [[G:%.*]] = func.call @global([[L]], [[WG]])
// CHECK-NEXT:      scf.yield [[G]] : tensor<4xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return [[X6]]

// REMARK-NEXT: remark: kernel-looping: 1 run(s) looped; calls 6 -> 2 (4 call sites removed)

// -----

// Rule 1: the threaded %x1 is also returned, so calls 0 and 1 are not looped together;
// rule 2: a varying i32 operand cannot be stacked. Nothing is looped: the remarks say why.

func.func private @h(%x: tensor<4xf32>, %n: i32) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}
func.func @illegal(%x0: tensor<4xf32>, %n0: i32, %n1: i32) -> (tensor<4xf32>, tensor<4xf32>) {
  %x1 = func.call @h(%x0, %n0) : (tensor<4xf32>, i32) -> tensor<4xf32>
  %x2 = func.call @h(%x1, %n0) : (tensor<4xf32>, i32) -> tensor<4xf32>
  %x3 = func.call @h(%x2, %n1) : (tensor<4xf32>, i32) -> tensor<4xf32>
  func.return %x3, %x1 : tensor<4xf32>, tensor<4xf32>
}

// CHECK-LABEL: func.func @illegal
// CHECK-NOT:     scf.for
// CHECK-COUNT-3: func.call @h(
// CHECK-NEXT:    func.return

// REMARK-NEXT: remark: kernel-looping: @h: calls #0 and #1 are not looped together: result #0, threaded into the next calls, has other uses (rule 1)
// REMARK-NEXT: remark: kernel-looping: @h: calls #1 and #2 are not looped together: operand #1 varies but its type i32 cannot be stacked (rule 2)
// REMARK-NEXT: remark: kernel-looping: 0 run(s) looped; calls 3 -> 3 (0 call sites removed)

// -----

// A run broken by a call of another function (A A B A A): both sides are looped.

func.func private @a(%x: tensor<4xf32>) -> tensor<4xf32>
func.func private @b(%x: tensor<4xf32>) -> tensor<4xf32>
func.func @broken(%x0: tensor<4xf32>) -> tensor<4xf32> {
  %x1 = func.call @a(%x0) : (tensor<4xf32>) -> tensor<4xf32>
  %x2 = func.call @a(%x1) : (tensor<4xf32>) -> tensor<4xf32>
  %x3 = func.call @b(%x2) : (tensor<4xf32>) -> tensor<4xf32>
  %x4 = func.call @a(%x3) : (tensor<4xf32>) -> tensor<4xf32>
  %x5 = func.call @a(%x4) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %x5 : tensor<4xf32>
}

// CHECK-LABEL: func.func @broken
// CHECK-SAME:    ([[X0:%.*]]: tensor<4xf32>)
// CHECK:         [[X2:%.*]] = scf.for {{.*}} iter_args({{%.*}} = [[X0]])
// CHECK-NEXT:      func.call @a(
// CHECK-NEXT:      scf.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    [[X3:%.*]] = func.call @b([[X2]])
// CHECK:         [[X5:%.*]] = scf.for {{.*}} iter_args({{%.*}} = [[X3]])
// CHECK-NEXT:      func.call @a(
// CHECK-NEXT:      scf.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return [[X5]]

// REMARK-NEXT: remark: kernel-looping: 2 run(s) looped; calls 5 -> 3 (2 call sites removed)
