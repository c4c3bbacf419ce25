// RUN: not rdu-opt %s -p outline-kernels 2>&1 | filecheck %s

// A layer whose ops are not contiguous in dependence order: an unmarked op between them uses
// a value of layer 0 and feeds layer 0 again, so layer 0 cannot be one kernel.

func.func @step(%h: tensor<1x8xbf16>, %w: tensor<8xbf16>) -> tensor<1x8xbf16> {
  %a = llm.rms_norm %h, %w {eps = 1.0e-05 : f32, llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8xbf16>
  %b = llm.rms_norm %a, %w {eps = 1.0e-06 : f32} : tensor<1x8xbf16>, tensor<8xbf16>
  %c = llm.add %a, %b {llm.layer = 0 : i64} : tensor<1x8xbf16>
  func.return %c : tensor<1x8xbf16>
}

// CHECK: error: pass 'outline-kernels' failed: cannot outline layer 0 as one kernel: 'llm.rms_norm' uses one of its values before its last op
