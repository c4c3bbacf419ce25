// RUN: rdu-opt %s -p canonicalize | filecheck %s

// stack(slice(x, 0), ..., slice(x, N-1)) -> x
func.func @stack_of_slices(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  %0 = dfk.slice %x[0] : tensor<3x4xf32> -> tensor<4xf32>
  %1 = dfk.slice %x[1] : tensor<3x4xf32> -> tensor<4xf32>
  %2 = dfk.slice %x[2] : tensor<3x4xf32> -> tensor<4xf32>
  %s = dfk.stack %0, %1, %2 : tensor<4xf32> -> tensor<3x4xf32>
  func.return %s : tensor<3x4xf32>
}
// CHECK-LABEL: func.func @stack_of_slices
// CHECK-SAME:    ([[X:%.*]]: tensor<3x4xf32>)
// CHECK-NEXT:    func.return [[X]] : tensor<3x4xf32>

// slice(stack(a0, ..., aN-1), i) -> ai
func.func @slice_of_stack(%a: tensor<4xf32>, %b: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  %s = dfk.stack %a, %b : tensor<4xf32> -> tensor<2x4xf32>
  %0 = dfk.slice %s[0] : tensor<2x4xf32> -> tensor<4xf32>
  %1 = dfk.slice %s[1] : tensor<2x4xf32> -> tensor<4xf32>
  func.return %1, %0 : tensor<4xf32>, tensor<4xf32>
}
// CHECK-LABEL: func.func @slice_of_stack
// CHECK-SAME:    ([[A:%.*]]: tensor<4xf32>, [[B:%.*]]: tensor<4xf32>)
// CHECK-NEXT:    func.return [[B]], [[A]] : tensor<4xf32>, tensor<4xf32>

// Negative: slices in the wrong order are a permutation, not x.
func.func @wrong_order(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %0 = dfk.slice %x[0] : tensor<2x4xf32> -> tensor<4xf32>
  %1 = dfk.slice %x[1] : tensor<2x4xf32> -> tensor<4xf32>
  %s = dfk.stack %1, %0 : tensor<4xf32> -> tensor<2x4xf32>
  func.return %s : tensor<2x4xf32>
}
// CHECK-LABEL: func.func @wrong_order
// CHECK-SAME:    ([[X:%.*]]: tensor<2x4xf32>)
// CHECK-NEXT:    [[S0:%.*]] = dfk.slice [[X]][0]
// CHECK-NEXT:    [[S1:%.*]] = dfk.slice [[X]][1]
// CHECK-NEXT:    [[S:%.*]] = dfk.stack [[S1]], [[S0]] : tensor<4xf32> -> tensor<2x4xf32>
// CHECK-NEXT:    func.return [[S]]

// Negative: slices of two different sources.
func.func @different_sources(%x: tensor<2x4xf32>, %y: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %0 = dfk.slice %x[0] : tensor<2x4xf32> -> tensor<4xf32>
  %1 = dfk.slice %y[1] : tensor<2x4xf32> -> tensor<4xf32>
  %s = dfk.stack %0, %1 : tensor<4xf32> -> tensor<2x4xf32>
  func.return %s : tensor<2x4xf32>
}
// CHECK-LABEL: func.func @different_sources
// CHECK-SAME:    ([[X:%.*]]: tensor<2x4xf32>, [[Y:%.*]]: tensor<2x4xf32>)
// CHECK-NEXT:    [[S0:%.*]] = dfk.slice [[X]][0]
// CHECK-NEXT:    [[S1:%.*]] = dfk.slice [[Y]][1]
// CHECK-NEXT:    [[S:%.*]] = dfk.stack [[S0]], [[S1]] : tensor<4xf32> -> tensor<2x4xf32>
// CHECK-NEXT:    func.return [[S]]

// Negative: a partial stack (the first N-1 slices of x) is not x.
func.func @partial(%x: tensor<3x4xf32>) -> tensor<2x4xf32> {
  %0 = dfk.slice %x[0] : tensor<3x4xf32> -> tensor<4xf32>
  %1 = dfk.slice %x[1] : tensor<3x4xf32> -> tensor<4xf32>
  %s = dfk.stack %0, %1 : tensor<4xf32> -> tensor<2x4xf32>
  func.return %s : tensor<2x4xf32>
}
// CHECK-LABEL: func.func @partial
// CHECK-SAME:    ([[X:%.*]]: tensor<3x4xf32>)
// CHECK-NEXT:    [[S0:%.*]] = dfk.slice [[X]][0]
// CHECK-NEXT:    [[S1:%.*]] = dfk.slice [[X]][1]
// CHECK-NEXT:    [[S:%.*]] = dfk.stack [[S0]], [[S1]] : tensor<4xf32> -> tensor<2x4xf32>
// CHECK-NEXT:    func.return [[S]]

// Negative: a value that is not a slice in the stack.
func.func @mixed(%x: tensor<2x4xf32>, %a: tensor<4xf32>) -> tensor<2x4xf32> {
  %0 = dfk.slice %x[0] : tensor<2x4xf32> -> tensor<4xf32>
  %s = dfk.stack %0, %a : tensor<4xf32> -> tensor<2x4xf32>
  func.return %s : tensor<2x4xf32>
}
// CHECK-LABEL: func.func @mixed
// CHECK-SAME:    ([[X:%.*]]: tensor<2x4xf32>, [[A:%.*]]: tensor<4xf32>)
// CHECK-NEXT:    [[S0:%.*]] = dfk.slice [[X]][0]
// CHECK-NEXT:    [[S:%.*]] = dfk.stack [[S0]], [[A]] : tensor<4xf32> -> tensor<2x4xf32>
// CHECK-NEXT:    func.return [[S]]

// Negative: a slice of a value that is not a dfk.stack stays.
func.func @slice_of_arg(%x: tensor<2x4xf32>) -> tensor<4xf32> {
  %0 = dfk.slice %x[1] : tensor<2x4xf32> -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}
// CHECK-LABEL: func.func @slice_of_arg
// CHECK-NEXT:    [[S:%.*]] = dfk.slice {{%.*}}[1] : tensor<2x4xf32> -> tensor<4xf32>
// CHECK-NEXT:    func.return [[S]]

// Calls are launches: canonicalize keeps an unused one.
dfk.kernel @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  dfk.return %a : tensor<4xf32>
}
func.func @unused_call(%a: tensor<4xf32>) {
  %r = dfk.call @k(%a) : (tensor<4xf32>) -> tensor<4xf32>
  func.return
}
// CHECK-LABEL: func.func @unused_call
// CHECK-NEXT:    {{%.*}} = dfk.call @k

// A loop only computes values (calls are not allowed in its kernel): canonicalize erases an
// unused one.
dfk.kernel @unused_loop(%a: tensor<4xf32>) {
  %r = dfk.loop %i = 0 to 2 carried(%x = %a : tensor<4xf32>) {
    %y = arith.addf %x, %x : tensor<4xf32>
    dfk.yield carried(%y : tensor<4xf32>)
  } -> (tensor<4xf32>)
  dfk.return
}
// CHECK-LABEL: dfk.kernel @unused_loop
// CHECK-NEXT:    dfk.return
