// User errors: one located message on stderr, exit 1, never a Python traceback, never a
// half-written output file.

// RUN: not rdu-opt %s -p no-such-pass 2>&1 | filecheck %s --check-prefixes=UNKNOWN-PASS,ALL
// UNKNOWN-PASS: rdu-opt: error: -p 'no-such-pass': unknown pass no-such-pass{{$}}
// RUN: not rdu-opt %s -p 'canonicalize,rdu-pipelin' 2>&1 | filecheck %s --check-prefixes=NEAR-PASS,ALL
// NEAR-PASS: rdu-opt: error: -p 'canonicalize,rdu-pipelin': unknown pass rdu-pipelin (did you mean rdu-pipeline?)

// RUN: not rdu-opt %s -p 'canonicalize{no-such-option=1}' 2>&1 | filecheck %s --check-prefixes=BAD-OPTION,ALL
// BAD-OPTION: rdu-opt: error: -p 'canonicalize{no-such-option=1}': canonicalize has no option no-such-option (its options: none)

// RUN: not rdu-opt %s -p 'canonicalize{' 2>&1 | filecheck %s --check-prefixes=BAD-SPEC,ALL
// BAD-SPEC: rdu-opt: error: -p 'canonicalize{': column 14: Expected argument name here
// BAD-SPEC-NOT: ^

// Option values of the wrong kind are named in words (never typing.Literal[...] or <class 'int'>),
// for our passes and through the plugin in plain xdsl-opt (which prints every error as a
// traceback: its last line is ours).
// RUN: not rdu-opt %s -p 'rdu-pipeline{launch=bogus}' 2>&1 | filecheck %s --check-prefixes=LITERAL,ALL
// LITERAL: rdu-opt: error: -p 'rdu-pipeline{launch=bogus}': rdu-pipeline option launch: 'bogus' is not one of software, hardware
// RUN: not rdu-opt %s -p 'rdu-pipeline{launch=3}' 2>&1 | filecheck %s --check-prefixes=LITERAL-INT,ALL
// LITERAL-INT: rdu-opt: error: -p 'rdu-pipeline{launch=3}': rdu-pipeline option launch: '3' is not one of software, hardware
// RUN: not rdu-opt %s -p 'shard-tensor-parallel{sockets=abc}' 2>&1 | filecheck %s --check-prefixes=INT,ALL
// INT: rdu-opt: error: -p 'shard-tensor-parallel{sockets=abc}': shard-tensor-parallel option sockets: 'abc' is not an integer
// RUN: not rdu-opt %s -p 'merge-launches{remarks=maybe}' 2>&1 | filecheck %s --check-prefixes=BOOL,ALL
// BOOL: rdu-opt: error: -p 'merge-launches{remarks=maybe}': merge-launches option remarks: 'maybe' is not true or false
// RUN: not rdu-opt %s -p 'rdu-pipeline{launch}' 2>&1 | filecheck %s --check-prefixes=NO-VALUE,ALL
// NO-VALUE: rdu-opt: error: -p 'rdu-pipeline{launch}': rdu-pipeline option launch needs a value (one of software, hardware)
// Target options the same way; a syntax error in -t is one line too (it was a traceback).
// RUN: not rdu-opt %s -t 'rdu-program{pretty=maybe}' 2>&1 | filecheck %s --check-prefixes=TARGET-BOOL,ALL
// TARGET-BOOL: rdu-opt: error: rdu-program option pretty: 'maybe' is not true or false
// RUN: not rdu-opt %s -t 'rdu-program{' 2>&1 | filecheck %s --check-prefixes=TARGET-SPEC,ALL
// TARGET-SPEC: rdu-opt: error: -t: column 13: Expected argument name here
// TARGET-SPEC-NOT: ^
// RUN: not xdsl-opt %s -p 'rdu-pipeline{launch=bogus}' 2>&1 | filecheck %s --check-prefix=PLUGIN
// PLUGIN: PipelineError: rdu-pipeline option launch: 'bogus' is not one of software, hardware
// PLUGIN-NOT: typing.Literal

// RUN: not rdu-opt %s.does-not-exist 2>&1 | filecheck %s --check-prefixes=MISSING,ALL
// MISSING: rdu-opt: error: cannot read input file '{{.*}}.does-not-exist': No such file or directory

// RUN: not rdu-opt %S/inputs/parse-error.mlir 2>&1 | filecheck %s --check-prefixes=PARSE,ALL
// PARSE: parse-error.mlir:3:19: error: operand is used with type i64, but has been previously used or defined with type i32
// PARSE-NOT: ^

// An unknown op is located at its name, on its own line (also for stdin, and for the bare
// form at the end of the input, where xDSL points at the next line).
// RUN: echo 'llm.foo' | not rdu-opt 2>&1 | filecheck %s --check-prefixes=UNKNOWN-OP,ALL
// UNKNOWN-OP: stdin:1:1: error: Operation llm.foo is not registered
// UNKNOWN-OP-NOT: ^
// RUN: printf '\n\n  "llm.foo"() : () -> ()\n' | not rdu-opt 2>&1 | filecheck %s --check-prefixes=UNKNOWN-GENERIC,ALL
// UNKNOWN-GENERIC: stdin:3:4: error: Operation llm.foo is not registered

// RUN: rm -f %t.out
// RUN: not rdu-opt %S/inputs/verify-error.mlir -o %t.out 2>&1 | filecheck %s --check-prefixes=VERIFY,ALL
// RUN: not ls %t.out
// VERIFY: verify-error.mlir:3:3: error: 'func.return' op Expected arguments to have the same types as the function output types
// VERIFY-NEXT: func.return

// A verifier of our own dialects, located the same way (the op is named once).
// RUN: not rdu-opt %S/inputs/llm-verify-error.mlir 2>&1 | filecheck %s --check-prefixes=LLM-VERIFY,ALL
// LLM-VERIFY: llm-verify-error.mlir:2:3: error: 'llm.linear' op input has 64 features but weight [128, 32] expects 32

// --help says what our passes do; --list-passes says it for every pass.
// RUN: rdu-opt --help | filecheck %s --check-prefix=HELP
// HELP: rdu-compiler passes:
// HELP: kernel-looping {{.*}}pipelined loop
// HELP: rdu-pipeline {{.*}}default pipeline
// RUN: rdu-opt --list-passes | filecheck %s --check-prefix=LIST
// LIST: canonicalize {{.*}}
// LIST: outline-kernels {{.*}}fuse each decoder layer

// RUN: not rdu-opt %s -t no-such-target 2>&1 | filecheck %s --check-prefixes=TARGET,ALL
// TARGET: error: argument -t/--target: invalid choice: 'no-such-target'

// RUN: not rdu-opt %S/inputs/float-overflow.mlir 2>&1 | filecheck %s --check-prefixes=FLOAT-RANGE,ALL
// FLOAT-RANGE: float-overflow.mlir:2:33
// FLOAT-RANGE: attribute not representable in its type

// RUN: not rdu-opt %S/inputs/integer-width.mlir 2>&1 | filecheck %s --check-prefixes=INT-WIDTH,ALL
// INT-WIDTH: integer-width.mlir:3:29: error: integer type i4294967296 is wider than MLIR's maximum of 16777215 bits

// ALL-NOT: Traceback

func.func @ok() {
  func.return
}
