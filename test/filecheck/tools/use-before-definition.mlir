// Regression (issue 12): two swapped lines of an imported decode step, minimized: a use before
// its definition. It used to verify and print, then `-p outline-kernels` died with a KeyError
// in passes/kernels.py. rdu-opt now refuses it before any pass, located, exit 1; plain xdsl-opt
// (which checks no dominance) gets our passes' precondition failure instead of a crash.

// ALL-NOT: KeyError
// OPT-NOT: Traceback

// RUN: not rdu-opt %s 2>&1 | filecheck %s --check-prefixes=OPT,ALL
// RUN: not rdu-opt %s -p outline-kernels 2>&1 | filecheck %s --check-prefixes=OPT,ALL
// RUN: not rdu-opt %s -p rdu-pipeline 2>&1 | filecheck %s --check-prefixes=OPT,ALL
// OPT: use-before-definition.mlir:[[# @LINE + 7]]:3: error: 'llm.add' op operand #1 (the result of 'llm.rms_norm') is used before its definition (defined at [[# @LINE + 8]]:3)
// OPT-NEXT: llm.add

// RUN: not xdsl-opt %s -p outline-kernels 2>&1 | filecheck %s --check-prefixes=PLAIN,ALL
// PLAIN: PassFailedException: 'llm.add' in @step: operand #1 (the result of 'llm.rms_norm') is used before its definition

func.func @step(%h: tensor<1x8xbf16>, %w: tensor<8xbf16>) -> tensor<1x8xbf16> {
  %c = llm.add %h, %a {llm.layer = 0 : i64} : tensor<1x8xbf16>
  %a = llm.rms_norm %h, %w {eps = 1.0e-05 : f32, llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8xbf16>
  func.return %c : tensor<1x8xbf16>
}
