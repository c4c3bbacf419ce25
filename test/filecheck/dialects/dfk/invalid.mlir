// RUN: rdu-opt %s --split-input-file --verify-diagnostics | filecheck %s
// Plain xdsl-opt (our dialects through the xdsl.universe plugin) gives the same messages: the
// kernel's verifier checks dominance in its body.
// RUN: xdsl-opt %s --split-input-file --verify-diagnostics | filecheck %s

// dfk.kernel

"dfk.kernel"() <{sym_name = "k", function_type = (tensor<2xf32>) -> ()}> ({
^bb0(%a: tensor<3xf32>):
  "dfk.return"() : () -> ()
}) : () -> ()
// CHECK: entry block argument types (tensor<3xf32>) of kernel @k do not match its input types (tensor<2xf32>)

// -----

// A kernel always has a body (no declarations).
dfk.kernel @k(tensor<2xf32>)
// CHECK: Region 'body' at position 0 expected a single block, but got 0 blocks

// -----

dfk.kernel @k() {
  "test.termop"() : () -> ()
}
// CHECK: body of kernel @k must end with dfk.return

// -----

// dfk.return

dfk.kernel @k(%a: tensor<2xf32>) -> tensor<2xf32> {
  dfk.return
}
// CHECK: dfk.return operand types () do not match the result types (tensor<2xf32>) of kernel @k

// -----

// dfk.call

func.func @f() {
  dfk.call @missing() : () -> ()
  func.return
}
// CHECK: callee @missing does not exist

// -----

func.func @g() {
  func.return
}
func.func @f() {
  dfk.call @g() : () -> ()
  func.return
}
// CHECK: callee @g is a func.func, not a dfk.kernel

// -----

dfk.kernel @k(%a: tensor<2xf32>) {
  dfk.return
}
func.func @f() {
  dfk.call @k() : () -> ()
  func.return
}
// CHECK: call to @k has 0 operand(s), but the kernel has 1

// -----

dfk.kernel @k() {
  dfk.return
}
func.func @f() {
  %r = dfk.call @k() : () -> tensor<2xf32>
  func.return
}
// CHECK: call to @k has 1 result(s), but the kernel has 0

// -----

dfk.kernel @k(%a: tensor<2xf32>, %b: tensor<2xbf16>) {
  dfk.return
}
func.func @f(%x: tensor<2xf32>) {
  dfk.call @k(%x, %x) : (tensor<2xf32>, tensor<2xf32>) -> ()
  func.return
}
// CHECK: operand #1 of call to @k has type tensor<2xf32>, but the kernel's operand #1 has type tensor<2xbf16>

// -----

dfk.kernel @k(%a: tensor<2xf32>) -> tensor<2xf32> {
  dfk.return %a : tensor<2xf32>
}
func.func @f(%x: tensor<2xf32>) {
  %r = dfk.call @k(%x) : (tensor<2xf32>) -> tensor<4xf32>
  func.return
}
// CHECK: result #0 of call to @k has type tensor<4xf32>, but the kernel's result #0 has type tensor<2xf32>

// -----

// dfk.loop

dfk.kernel @k() {
  dfk.loop %i = 0 to 0 {
    dfk.yield
  }
  dfk.return
}
// CHECK: dfk.loop trip count must be >= 1, got 0

// -----

dfk.kernel @k() {
  dfk.loop %i = 0 to 4 pipeline_depth 0 {
    dfk.yield
  }
  dfk.return
}
// CHECK: dfk.loop pipeline_depth must be >= 1, got 0

// -----

dfk.kernel @k(%a: tensor<2x8xf32>, %b: tensor<3x8xf32>) {
  dfk.loop %i = 0 to 3 stacked(%x = %b : tensor<3x8xf32>, %y = %a : tensor<2x8xf32>) {
    dfk.yield
  }
  dfk.return
}
// CHECK: dfk.loop stacked operand #1 (tensor<2x8xf32>) has leading dimension 2, but the trip count is 3

// -----

dfk.kernel @k(%a: tensor<2x8xf32>) {
  "dfk.loop"(%a) <{trip_count = 2 : i64, operandSegmentSizes = array<i32: 0, 0, 1>}> ({
  ^bb0(%i: index, %x: tensor<2x8xf32>):
    "dfk.yield"() <{operandSegmentSizes = array<i32: 0, 0>}> : () -> ()
  }) : (tensor<2x8xf32>) -> ()
  dfk.return
}
// CHECK: dfk.loop body argument types (index, tensor<2x8xf32>) do not match the expected (index, tensor<8xf32>) (index, carried, invariant, stacked slices)

// -----

dfk.kernel @k() {
  "dfk.loop"() <{trip_count = 4 : i64, operandSegmentSizes = array<i32: 0, 0, 0>}> ({
  ^bb0(%i: index):
    "test.termop"() : () -> ()
  }) : () -> ()
  dfk.return
}
// CHECK: dfk.loop body must end with dfk.yield

// -----

dfk.kernel @k(%h: tensor<4xf32>, %g: tensor<4xbf16>) {
  %r = dfk.loop %i = 0 to 2 carried(%x = %h : tensor<4xf32>) invariant(%y = %g : tensor<4xbf16>) {
    dfk.yield carried(%y : tensor<4xbf16>)
  } -> (tensor<4xf32>)
  dfk.return
}
// CHECK: dfk.yield carried types (tensor<4xbf16>) do not match the loop's carried types (tensor<4xf32>)

// -----

dfk.kernel @k(%h: tensor<4xf32>) {
  %r = dfk.loop %i = 0 to 2 invariant(%x = %h : tensor<4xf32>) {
    dfk.yield stacked(%x : tensor<4xf32>)
  } -> (tensor<4x4xf32>)
  dfk.return
}
// CHECK: dfk.loop result types (tensor<4x4xf32>) do not match the expected (tensor<2x4xf32>) (carried types, then 2 x each yielded stacked type)

// -----

// dfk.yield

dfk.kernel @k(%a: tensor<2xf32>) -> tensor<2xf32> {
  dfk.yield carried(%a : tensor<2xf32>)
}
// CHECK: 'dfk.yield' expects parent op 'dfk.loop'

// -----

// dfk.stack

func.func @f() {
  %s = "dfk.stack"() : () -> tensor<0x2xf32>
  func.return
}
// CHECK: dfk.stack needs at least one operand

// -----

func.func @f(%a: tensor<2xf32>, %b: tensor<2xbf16>) {
  %s = "dfk.stack"(%a, %b) : (tensor<2xf32>, tensor<2xbf16>) -> tensor<2x2xf32>
  func.return
}
// CHECK: dfk.stack operand #1 has type tensor<2xbf16>, but operand #0 has type tensor<2xf32>: all stacked values must have the same type

// -----

func.func @f(%a: tensor<2xf32>) {
  %s = dfk.stack %a, %a : tensor<2xf32> -> tensor<2x3xf32>
  func.return
}
// CHECK: dfk.stack result type tensor<2x3xf32> does not match tensor<2x2xf32> (2 x the operand type)

// -----

// dfk.slice

func.func @f(%a: tensor<f32>) {
  %s = dfk.slice %a[0] : tensor<f32> -> tensor<f32>
  func.return
}
// CHECK: dfk.slice source tensor<f32> has no leading dimension

// -----

func.func @f(%a: tensor<4x2xf32>) {
  %s = dfk.slice %a[4] : tensor<4x2xf32> -> tensor<2xf32>
  func.return
}
// CHECK: dfk.slice index 4 is out of range for the leading dimension 4 of tensor<4x2xf32>

// -----

func.func @f(%a: tensor<4x2xf32>) {
  %s = dfk.slice %a[-1] : tensor<4x2xf32> -> tensor<2xf32>
  func.return
}
// CHECK: dfk.slice index -1 is out of range for the leading dimension 4 of tensor<4x2xf32>

// -----

func.func @f(%a: tensor<4x2xf32>) {
  %s = dfk.slice %a[1] : tensor<4x2xf32> -> tensor<4xf32>
  func.return
}
// CHECK: dfk.slice result type tensor<4xf32> does not match tensor<2xf32> (the source type without its leading dimension)

// -----

// Where a dfk.loop may be: inside a kernel, not nested.

func.func @f() {
  dfk.loop %i = 0 to 2 {
    dfk.yield
  }
  func.return
}
// CHECK: 'dfk.loop' expects ancestor op 'dfk.kernel'

// -----

dfk.kernel @k() {
  dfk.loop %i = 0 to 2 {
    dfk.loop %j = 0 to 3 {
      dfk.yield
    }
    dfk.yield
  }
  dfk.return
}
// CHECK: dfk.loop cannot be nested in another dfk.loop

// -----

// A loop body may read the kernel's values (captures), but only those defined before the loop.
dfk.kernel @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %r = dfk.loop %i = 0 to 2 carried(%x = %a : tensor<4xf32>) {
    %y = arith.addf %x, %b : tensor<4xf32>
    dfk.yield carried(%y : tensor<4xf32>)
  } -> (tensor<4xf32>)
  %b = arith.addf %a, %a : tensor<4xf32>
  dfk.return %r : tensor<4xf32>
}
// CHECK: 'arith.addf' op operand #1 (the result of 'arith.addf') is used before its definition

// -----

// Kernels are isolated from above and make no calls.

func.func @f(%a: tensor<4xf32>) {
  dfk.kernel @k() {
    %y = arith.addf %a, %a : tensor<4xf32>
    dfk.return
  }
  func.return
}
// CHECK: 'arith.addf' op operand #0 (argument #0 of 'func.func' @f) is defined outside the enclosing 'dfk.kernel' @k, which is isolated from above

// -----

dfk.kernel @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %r = dfk.call @k(%a) : (tensor<4xf32>) -> tensor<4xf32>
  dfk.return %r : tensor<4xf32>
}
// CHECK: 'dfk.call' op calls are not allowed inside a kernel (in @k): a kernel is one chip configuration and cannot launch another

// -----

func.func @g(%a: tensor<4xf32>) -> tensor<4xf32> {
  func.return %a : tensor<4xf32>
}
dfk.kernel @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %r = func.call @g(%a) : (tensor<4xf32>) -> tensor<4xf32>
  dfk.return %r : tensor<4xf32>
}
// CHECK: 'func.call' op calls are not allowed inside a kernel (in @k): a kernel is one chip configuration and cannot launch another

// -----

dfk.kernel @inner(%a: tensor<4xf32>) -> tensor<4xf32> {
  dfk.return %a : tensor<4xf32>
}
dfk.kernel @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %r = dfk.loop %i = 0 to 2 carried(%x = %a : tensor<4xf32>) {
    %y = dfk.call @inner(%x) : (tensor<4xf32>) -> tensor<4xf32>
    dfk.yield carried(%y : tensor<4xf32>)
  } -> (tensor<4xf32>)
  dfk.return %r : tensor<4xf32>
}
// CHECK: 'dfk.call' op calls are not allowed inside a kernel (in @k): a kernel is one chip configuration and cannot launch another

// -----

// Dominance: a kernel's body uses values after their definition.

dfk.kernel @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %y = arith.mulf %x, %x : tensor<4xf32>
  %x = arith.addf %a, %a : tensor<4xf32>
  dfk.return %y : tensor<4xf32>
}
// CHECK: 'arith.mulf' op operand #0 (the result of 'arith.addf') is used before its definition

// -----

dfk.kernel @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %r = dfk.loop %i = 0 to 2 carried(%x = %a : tensor<4xf32>) {
    %y = arith.addf %x, %z : tensor<4xf32>
    %z = arith.addf %x, %x : tensor<4xf32>
    dfk.yield carried(%y : tensor<4xf32>)
  } -> (tensor<4xf32>)
  dfk.return %r : tensor<4xf32>
}
// CHECK: 'arith.addf' op operand #1 (the result of 'arith.addf') is used before its definition

// -----

dfk.kernel @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %x = arith.addf %a, %x : tensor<4xf32>
  dfk.return %x : tensor<4xf32>
}
// CHECK: 'arith.addf' op operand #1 (the result of 'arith.addf') is the op's own result
