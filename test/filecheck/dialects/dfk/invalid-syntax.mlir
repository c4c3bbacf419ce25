// RUN: rdu-opt %s --split-input-file --parsing-diagnostics | filecheck %s

func.func @f() {
  dfk.loop %i = 1 to 4 {
    dfk.yield
  }
  func.return
}
// CHECK: dfk.loop always counts from 0

// -----

func.func @f(%a: tensor<f32>) {
  dfk.loop %i = 0 to 4 stacked(%w = %a : tensor<f32>) {
    dfk.yield
  }
  func.return
}
// CHECK: stacked operand type must be a tensor with a leading dimension, got tensor<f32>
