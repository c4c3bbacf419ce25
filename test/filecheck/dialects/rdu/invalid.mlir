// RUN: rdu-opt %s --split-input-file --verify-diagnostics --parsing-diagnostics | filecheck %s

// --- types and attributes: located parse errors ---

rdu.tensor @t : tensor<4xbf16> tier sram socket 0
// CHECK:      invalid.mlir:[[# @LINE - 1]]:37
// CHECK-NEXT: rdu.tensor @t : tensor<4xbf16> tier sram socket 0
// CHECK-NEXT:                                     ^^^^
// CHECK-NEXT:                                     Expected `hbm`, or `ddr`.

// -----

"test.op"() : () -> !rdu.stream<tensor<16x64xbf16>, 0>
// CHECK: invalid.mlir:[[# @LINE - 1]]:53
// CHECK: stream depth must be >= 1, got 0

// -----

"test.op"() : () -> !rdu.stream<tensor<?x64xbf16>, 2>
// CHECK: stream tile: expected a static shape, got tensor<?x64xbf16>

// -----

"test.op"() : () -> !rdu.stream<tensor<4xindex>, 2>
// CHECK: stream tile: expected a fixed-bitwidth element type, got tensor<4xindex>

// -----

"test.op"() : () -> !rdu.stream<i32, 2>
// CHECK: stream tile: expected a tensor type, got i32

// --- rdu.tensor ---

// -----

rdu.tensor @t : tensor<?x4xbf16> tier hbm socket 0
// CHECK: 'rdu.tensor' @t: expected a static shape, got tensor<?x4xbf16>

// -----

rdu.tensor @t : tensor<4xbf16> tier hbm socket -1
// CHECK: 'rdu.tensor' socket must be >= 0, got -1

// -----

rdu.tensor @t : tensor<4xbf16> tier hbm socket 0 at [0]
// CHECK: 'rdu.tensor' @t: `at` needs a `source`

// -----

rdu.tensor @t : tensor<4x4xbf16> tier hbm socket 0 source "w" at [0]
// CHECK: 'rdu.tensor' @t: `at` needs 2 non-negative offsets, got [0]

// -----

rdu.tensor @t : tensor<4xbf16> tier hbm socket 0 aliases @t
// CHECK: 'rdu.tensor' @t aliases itself

// -----

rdu.tensor @t : tensor<4xbf16> tier hbm socket 0 aliases @nowhere
// CHECK: 'rdu.tensor' @nowhere does not exist

// -----

rdu.tensor @a : tensor<4xbf16> tier hbm socket 0
rdu.tensor @t : tensor<8xbf16> tier hbm socket 0 aliases @a
// CHECK: 'rdu.tensor' @t : tensor<8xbf16> aliases @a of a different type tensor<4xbf16>

// -----

rdu.tensor @a : tensor<4xbf16> tier hbm socket 0
rdu.tensor @t : tensor<4xbf16> tier hbm socket 1 aliases @a
// CHECK: 'rdu.tensor' @t aliases @a but is placed in another tier or socket

// -----

func.func @f() {
  func.return
}
rdu.tensor @t : tensor<4xbf16> tier hbm socket 0 aliases @f
// CHECK: 'rdu.tensor' @f is a 'func.func', not an rdu.tensor

// --- rdu.kernel and rdu.hw_loop ---

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 3 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  %y = rdu.pcu "silu" count 2 simd (%x) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.kernel' @k declares pcus 3 but its units use 2

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  rdu.hw_loop trips 0 prefetch 0 {
    %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  }
}
// CHECK: 'rdu.hw_loop' trips must be >= 1, got 0

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  rdu.hw_loop trips 2 prefetch -1 {
    %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  }
}
// CHECK: 'rdu.hw_loop' prefetch must be >= 0, got -1

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
func.func @f() {
  rdu.hw_loop trips 2 prefetch 1 {
    %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  }
  func.return
}
// CHECK: 'rdu.hw_loop' expects parent op 'rdu.kernel'

// --- units ---

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
func.func @f() {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  func.return
}
// CHECK: 'rdu.load' expects parent op to be one of 'rdu.kernel', 'rdu.hw_loop'

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 1 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  %y = rdu.pcu "" count 1 simd (%x) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.pcu' needs a non-empty op kind

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  %y = rdu.pcu "silu" count 0 simd (%x) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.pcu' count must be >= 1, got 0

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 1 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  rdu.pcu "silu" count 1 simd (%x) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> ()
}
// CHECK: 'rdu.pcu' "silu" needs at least one output stream

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 1 sram_bytes 4096 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  rdu.pmu bytes 4096 count 1 buffers 2 (%x) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> ()
}
// CHECK: 'rdu.pmu' needs at least one input and one output stream

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 1 sram_bytes 8192 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  %y = rdu.pmu bytes 8192 count 1 buffers 2 (%x) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xf32>, 2>
}
// CHECK: 'rdu.pmu' cannot convert elements: stream tile tensor<16x64xf32> differs from tensor<16x64xbf16> in element type

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 2 sram_bytes 2048 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  %y = rdu.pmu bytes 1024 count 2 buffers 2 (%x) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.pmu' holds 2048 bytes but 2 buffers of its largest tile need 4096

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 0 : !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.load' agcus must be >= 1, got 0

// -----

rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.load' lists 0 tensors but runs 1 time(s) per launch: list one tensor (the same every time) or one per run

// -----

rdu.tensor @a : tensor<16x64xbf16> tier hbm socket 0
rdu.tensor @b : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  rdu.hw_loop trips 3 prefetch 1 {
    %x = rdu.load [@a, @b] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  }
}
// CHECK: 'rdu.load' lists 2 tensors but runs 3 time(s) per launch: list one tensor (the same every time) or one per run

// -----

rdu.tensor @a : tensor<16x64xbf16> tier hbm socket 0
rdu.tensor @b : tensor<16x32xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  rdu.hw_loop trips 2 prefetch 1 {
    %x = rdu.load [@a, @b] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  }
}
// CHECK: 'rdu.load' per-iteration tensors differ in type: @a is tensor<16x64xbf16>, @b is tensor<16x32xbf16>

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xf32>, 2>
}
// CHECK: 'rdu.load' stream tile tensor<16x64xf32> does not match the element type of @x : tensor<16x64xbf16>

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 bytes 4096 : !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.load' moves 4096 bytes but @x holds only 2048

// -----

rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@k] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.load' @k is a 'rdu.kernel', not an rdu.tensor

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.tensor @y : tensor<16x64xf32> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  rdu.store %x -> [@y] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.store' stream tile tensor<16x64xbf16> does not match the element type of @y : tensor<16x64xf32>

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  %y = rdu.all_reduce %x sockets 1 : !rdu.stream<tensor<16x64xbf16>, 2>
}
// CHECK: 'rdu.all_reduce' sockets must be >= 2, got 1

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  %y = "rdu.all_reduce"(%x) <{sockets = 2 : i64}> : (!rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xf32>, 2>
}
// CHECK: result 'output' at position 0 does not verify:
// CHECK-NEXT: attribute !rdu.stream<tensor<16x64xbf16>, 2> expected from variable 'T', but got !rdu.stream<tensor<16x64xf32>, 2>

// --- host side ---

// -----

func.func @main() {
  rdu.launch @nowhere mode software
  func.return
}
// CHECK: 'rdu.launch' @nowhere does not exist

// -----

func.func @main() {
  rdu.launch @main mode software
  func.return
}
// CHECK: 'rdu.launch' @main is a 'func.func', not an rdu.kernel

// -----

rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  rdu.sync
}
// CHECK: 'rdu.sync' is a host op and cannot be inside rdu.kernel @k

// -----

rdu.tensor @x : tensor<16x64xbf16> tier hbm socket 0
rdu.kernel @k pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@x] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
}
rdu.launch @k mode hardware
// CHECK: 'rdu.launch' must be inside a func.func (the host program)
