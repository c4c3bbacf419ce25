// RUN: rdu-opt %s | filecheck %s
// RUN: rdu-opt %s | %roundtrip | filecheck %s
// RUN: rdu-opt %s | %generic-roundtrip | filecheck %s

// Kernels: no result, one result, several results; visibility, argument/result and
// discardable attributes; a body of upstream ops.

dfk.kernel private @nothing() {
  dfk.return
}
// CHECK:      dfk.kernel private @nothing() {
// CHECK-NEXT:   dfk.return
// CHECK-NEXT: }

dfk.kernel @double(%a: tensor<4xf32>) -> tensor<4xf32> {
  %s = arith.addf %a, %a : tensor<4xf32>
  dfk.return %s : tensor<4xf32>
}
// CHECK:      dfk.kernel @double([[A:%.*]]: tensor<4xf32>) -> tensor<4xf32> {
// CHECK-NEXT:   [[S:%.*]] = arith.addf [[A]], [[A]] : tensor<4xf32>
// CHECK-NEXT:   dfk.return [[S]] : tensor<4xf32>
// CHECK-NEXT: }

dfk.kernel @pair(%a: tensor<4xf32> {dfk.test = 1 : i64}, %b: tensor<1xi32>) -> (tensor<4xf32>, tensor<1xi32> {dfk.test = 2 : i64}) attributes {dfk.layer = 3 : i64} {
  dfk.return %a, %b : tensor<4xf32>, tensor<1xi32>
}
// CHECK:      dfk.kernel @pair([[A:%.*]]: tensor<4xf32> {dfk.test = 1 : i64}, [[B:%.*]]: tensor<1xi32>) -> (tensor<4xf32>, tensor<1xi32> {dfk.test = 2 : i64}) attributes {dfk.layer = 3 : i64} {
// CHECK-NEXT:   dfk.return [[A]], [[B]] : tensor<4xf32>, tensor<1xi32>
// CHECK-NEXT: }

// Calls with zero, one and several results.

func.func @calls(%x: tensor<4xf32>, %p: tensor<1xi32>) -> (tensor<4xf32>, tensor<1xi32>) {
  dfk.call @nothing() : () -> ()
  %d = dfk.call @double(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %r:2 = dfk.call @pair(%d, %p) : (tensor<4xf32>, tensor<1xi32>) -> (tensor<4xf32>, tensor<1xi32>)
  func.return %r#0, %r#1 : tensor<4xf32>, tensor<1xi32>
}
// CHECK-LABEL: func.func @calls
// CHECK-SAME:    ([[X:%.*]]: tensor<4xf32>, [[P:%.*]]: tensor<1xi32>)
// CHECK-NEXT:    dfk.call @nothing() : () -> ()
// CHECK-NEXT:    [[D:%.*]] = dfk.call @double([[X]]) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    [[R0:%.*]], [[R1:%.*]] = dfk.call @pair([[D]], [[P]]) : (tensor<4xf32>, tensor<1xi32>) -> (tensor<4xf32>, tensor<1xi32>)
// CHECK-NEXT:    func.return [[R0]], [[R1]]

// Loops: every group, in a kernel, with a pipeline depth and a discardable attribute.

dfk.kernel @layer.looped(%h: tensor<1x64xbf16>, %pos: tensor<1xi32>, %ws: tensor<4x64x64xbf16>) -> (tensor<1x64xbf16>, tensor<4x64x64xbf16>) {
  %r:2 = dfk.loop %i = 0 to 4 pipeline_depth 2 carried(%x = %h : tensor<1x64xbf16>) invariant(%p = %pos : tensor<1xi32>) stacked(%w = %ws : tensor<4x64x64xbf16>) attributes {dfk.test} {
    dfk.yield carried(%x : tensor<1x64xbf16>) stacked(%w : tensor<64x64xbf16>)
  } -> (tensor<1x64xbf16>, tensor<4x64x64xbf16>)
  dfk.return %r#0, %r#1 : tensor<1x64xbf16>, tensor<4x64x64xbf16>
}
// CHECK-LABEL: dfk.kernel @layer.looped
// CHECK-SAME:    ([[H:%.*]]: tensor<1x64xbf16>, [[POS:%.*]]: tensor<1xi32>, [[WS:%.*]]: tensor<4x64x64xbf16>)
// CHECK-NEXT:    [[R0:%.*]], [[R1:%.*]] = dfk.loop [[I:%.*]] = 0 to 4 pipeline_depth 2 carried([[X:%.*]] = [[H]] : tensor<1x64xbf16>) invariant([[P:%.*]] = [[POS]] : tensor<1xi32>) stacked([[W:%.*]] = [[WS]] : tensor<4x64x64xbf16>) attributes {dfk.test} {
// CHECK-NEXT:      dfk.yield carried([[X]] : tensor<1x64xbf16>) stacked([[W]] : tensor<64x64xbf16>)
// CHECK-NEXT:    } -> (tensor<1x64xbf16>, tensor<4x64x64xbf16>)
// CHECK-NEXT:    dfk.return [[R0]], [[R1]]

// Each group alone, all groups empty, the default pipeline depth (not printed), and a
// body that uses the induction variable.

dfk.kernel @loops(%h: tensor<4xf32>, %pos: tensor<1xi32>, %ws: tensor<3x4xf32>) -> (tensor<4xf32>, tensor<3x4xf32>) {
  dfk.loop %i = 0 to 1 {
    dfk.yield
  }
  %c = dfk.loop %i = 0 to 3 carried(%x = %h : tensor<4xf32>) {
    %n = arith.addf %x, %x : tensor<4xf32>
    dfk.yield carried(%n : tensor<4xf32>)
  } -> (tensor<4xf32>)
  dfk.loop %i = 0 to 2 pipeline_depth 1 invariant(%p = %pos : tensor<1xi32>) {
    %j = arith.index_cast %i : index to i32
    dfk.yield
  }
  %s = dfk.loop %i = 0 to 3 stacked(%w = %ws : tensor<3x4xf32>) {
    %n = arith.mulf %w, %w : tensor<4xf32>
    dfk.yield stacked(%n : tensor<4xf32>)
  } -> (tensor<3x4xf32>)
  dfk.return %c, %s : tensor<4xf32>, tensor<3x4xf32>
}
// CHECK-LABEL: dfk.kernel @loops
// CHECK-SAME:    ([[H:%.*]]: tensor<4xf32>, [[POS:%.*]]: tensor<1xi32>, [[WS:%.*]]: tensor<3x4xf32>)
// CHECK-NEXT:    dfk.loop [[I:%.*]] = 0 to 1 {
// CHECK-NEXT:      dfk.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    [[C:%.*]] = dfk.loop [[I:%.*]] = 0 to 3 carried([[X:%.*]] = [[H]] : tensor<4xf32>) {
// CHECK-NEXT:      [[N:%.*]] = arith.addf [[X]], [[X]] : tensor<4xf32>
// CHECK-NEXT:      dfk.yield carried([[N]] : tensor<4xf32>)
// CHECK-NEXT:    } -> (tensor<4xf32>)
// CHECK-NEXT:    dfk.loop [[I:%.*]] = 0 to 2 invariant([[P:%.*]] = [[POS]] : tensor<1xi32>) {
// CHECK-NEXT:      {{%.*}} = arith.index_cast [[I]] : index to i32
// CHECK-NEXT:      dfk.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    [[S:%.*]] = dfk.loop [[I:%.*]] = 0 to 3 stacked([[W:%.*]] = [[WS]] : tensor<3x4xf32>) {
// CHECK-NEXT:      [[N:%.*]] = arith.mulf [[W]], [[W]] : tensor<4xf32>
// CHECK-NEXT:      dfk.yield stacked([[N]] : tensor<4xf32>)
// CHECK-NEXT:    } -> (tensor<3x4xf32>)
// CHECK-NEXT:    dfk.return [[C]], [[S]]

// A loop body may read a value of its kernel directly (a capture: the same value every trip).

dfk.kernel @captures(%h: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xf32> {
  %c = dfk.loop %i = 0 to 2 carried(%x = %h : tensor<4xf32>) {
    %n = arith.addf %x, %b : tensor<4xf32>
    dfk.yield carried(%n : tensor<4xf32>)
  } -> (tensor<4xf32>)
  dfk.return %c : tensor<4xf32>
}
// CHECK-LABEL: dfk.kernel @captures
// CHECK-SAME:    ([[H:%.*]]: tensor<4xf32>, [[B:%.*]]: tensor<4xf32>)
// CHECK-NEXT:    [[C:%.*]] = dfk.loop [[I:%.*]] = 0 to 2 carried([[X:%.*]] = [[H]] : tensor<4xf32>) {
// CHECK-NEXT:      [[N:%.*]] = arith.addf [[X]], [[B]] : tensor<4xf32>

// Stacking and slicing.

func.func @stack_slice(%a: tensor<2x8xbf16>, %b: tensor<2x8xbf16>) -> (tensor<2x2x8xbf16>, tensor<1x2x8xbf16>, tensor<2x8xbf16>) {
  %s = dfk.stack %a, %b : tensor<2x8xbf16> -> tensor<2x2x8xbf16>
  %one = dfk.stack %a : tensor<2x8xbf16> -> tensor<1x2x8xbf16>
  %t = dfk.slice %s[1] : tensor<2x2x8xbf16> -> tensor<2x8xbf16>
  func.return %s, %one, %t : tensor<2x2x8xbf16>, tensor<1x2x8xbf16>, tensor<2x8xbf16>
}
// CHECK-LABEL: func.func @stack_slice
// CHECK-SAME:    ([[A:%.*]]: tensor<2x8xbf16>, [[B:%.*]]: tensor<2x8xbf16>)
// CHECK-NEXT:    [[S:%.*]] = dfk.stack [[A]], [[B]] : tensor<2x8xbf16> -> tensor<2x2x8xbf16>
// CHECK-NEXT:    [[ONE:%.*]] = dfk.stack [[A]] : tensor<2x8xbf16> -> tensor<1x2x8xbf16>
// CHECK-NEXT:    [[T:%.*]] = dfk.slice [[S]][1] : tensor<2x2x8xbf16> -> tensor<2x8xbf16>
// CHECK-NEXT:    func.return [[S]], [[ONE]], [[T]]
