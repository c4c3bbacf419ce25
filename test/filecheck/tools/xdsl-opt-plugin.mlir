// Plain xdsl-opt sees rdu-compiler's dialects and canonicalization patterns through the
// `xdsl.universe` entry point of the installed package.
// RUN: xdsl-opt %s | filecheck %s
// RUN: xdsl-opt %s -p canonicalize | filecheck %s --check-prefix=CANON
// RUN: xdsl-opt %s --print-op-generic | xdsl-opt | filecheck %s

builtin.module {
  llm.param @w "model.norm.weight" : tensor<8xbf16>
  rdu.tensor @t : tensor<4x8xbf16> activation tier hbm

  func.func @f(%x: tensor<1x8xbf16>, %s: tensor<2x1x8xbf16>) -> (tensor<1x8xbf16>, tensor<2x1x8xbf16>) {
    %w = llm.weight @w : tensor<8xbf16>
    %y = llm.rms_norm %x, %w {eps = 1.0e-05 : f32} : tensor<1x8xbf16>, tensor<8xbf16>
    %a = dfk.slice %s[0] : tensor<2x1x8xbf16> -> tensor<1x8xbf16>
    %b = dfk.slice %s[1] : tensor<2x1x8xbf16> -> tensor<1x8xbf16>
    %r = dfk.stack %a, %b : tensor<1x8xbf16> -> tensor<2x1x8xbf16>
    func.return %y, %r : tensor<1x8xbf16>, tensor<2x1x8xbf16>
  }
}

// CHECK: llm.param @w "model.norm.weight" : tensor<8xbf16>
// CHECK: rdu.tensor @t : tensor<4x8xbf16> activation tier hbm
// CHECK: llm.rms_norm
// CHECK: dfk.stack

// The dfk canonicalization (stack of the slices of x, in order -> x) runs under xdsl-opt.
// CANON: func.func @f(%[[X:.*]]: tensor<1x8xbf16>, %[[S:.*]]: tensor<2x1x8xbf16>)
// CANON-NOT: dfk.stack
// CANON: func.return %{{.*}}, %[[S]]

// Our refusals under plain xdsl-opt. xDSL 0.74's xdsl-opt catches no exception (unless
// --verify-diagnostics / --parsing-diagnostics), so it prints a traceback, whose last line is
// our one-line message (docs/robustness.md says what xDSL would need to print it alone):
// RUN: not xdsl-opt %s -p 'lower-dfk-to-rdu{launch=bogus}' 2>&1 | tail -n 1 | filecheck %s --check-prefix=OPTION
// OPTION: PipelineError: lower-dfk-to-rdu option launch: 'bogus' is not one of software, hardware
// RUN: not xdsl-opt %s -p 'lower-dfk-to-rdu' 2>&1 | tail -n 1 | filecheck %s --check-prefix=FAILED
// FAILED: PassFailedException: lower-dfk-to-rdu: no func.func @decode_step (a decode step from rdu-import)
// With --verify-diagnostics, a pass failure (a DiagnosticException) is the message alone:
// RUN: xdsl-opt %s -p 'lower-dfk-to-rdu' --verify-diagnostics 2>&1 | filecheck %s --check-prefix=DIAG
// DIAG-NOT: Traceback
// DIAG: lower-dfk-to-rdu: no func.func @decode_step (a decode step from rdu-import)
// DIAG-NOT: Traceback
