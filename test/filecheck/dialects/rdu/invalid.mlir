// RUN: rdu-opt %s --split-input-file --verify-diagnostics --parsing-diagnostics | filecheck %s

// --- types and attributes: located parse errors ---

rdu.tensor @t : tensor<4xbf16> activation tier sram
// CHECK:      invalid.mlir:[[# @LINE - 1]]:48
// CHECK-NEXT: rdu.tensor @t : tensor<4xbf16> activation tier sram
// CHECK-NEXT:                                                ^^^^
// CHECK-NEXT:                                                Expected `hbm`, or `ddr`.

// -----

"test.op"() : () -> !rdu.stream<tensor<16x64xbf16>, 0>
// CHECK: invalid.mlir:[[# @LINE - 1]]:53
// CHECK: stream depth must be >= 1, got 0

// -----

"test.op"() : () -> !rdu.stream<tensor<?x64xbf16>, 2>
// CHECK: stream tile: expected a static shape, got tensor<?x64xbf16>

// -----

"test.op"() : () -> !rdu.stream<tensor<4xindex>, 2>
// CHECK: stream tile: expected an element type of bf16, f16, f32, i32, i64, got tensor<4xindex>

// -----

// i1 and i8 are fixed-bitwidth, but neither the program file nor the simulator's numerics
// carry them (found by fuzzing: `-t rdu-program` died with a KeyError).
"test.op"() : () -> !rdu.stream<tensor<4xi8>, 2>
// CHECK: stream tile: expected an element type of bf16, f16, f32, i32, i64, got tensor<4xi8>

// -----

builtin.module {
  rdu.tensor @flags : tensor<4xi1> "input" tier hbm
}
// CHECK: 'rdu.tensor' @flags: expected an element type of bf16, f16, f32, i32, i64, got tensor<4xi1>

// -----

"test.op"() : () -> !rdu.stream<i32, 2>
// CHECK: stream tile: expected a tensor type, got i32

// -----

"test.op"() {a = #rdu.access<"x" [0:2, 4:4]>} : () -> ()
// CHECK: access to 'x': empty or negative range in [(0, 2), (4, 4)]

// -----

"test.op"() {a = #rdu.work<flops 1 bytes_read 2 tiles 3>} : () -> ()
// CHECK: invalid.mlir:[[# @LINE - 1]]:49
// CHECK: Expected 'bytes_written'

// --- values and tensors ---

// -----

rdu.value "x" weights : tensor<4xbf16>
// CHECK:      invalid.mlir:[[# @LINE - 1]]:15
// CHECK:      Expected `param`, `input`, `output`, or `state`.

// -----

rdu.tensor @t : tensor<?x4xbf16> activation tier hbm
// CHECK: 'rdu.tensor' @t: expected a static shape, got tensor<?x4xbf16>

// -----

rdu.tensor @t : tensor<4xbf16> scratch tier hbm
// CHECK:      invalid.mlir:[[# @LINE - 1]]:32
// CHECK:      Expected `weight`, `kv_cache`, `input`, `output`, or `activation`.

// -----

// The generic form states enum attributes in full; a string is no role.
"rdu.value"() <{value = "x", role = "param", type = tensor<4xbf16>}> : () -> ()
// CHECK: "param" should be of base attribute rdu.role

// -----

rdu.tensor @t : tensor<4xbf16> kv_cache tier hbm aliases @t
// CHECK: 'rdu.tensor' @t aliases itself

// -----

rdu.tensor @t : tensor<4xbf16> kv_cache tier hbm aliases @nowhere
// CHECK: 'rdu.tensor' @t aliases @nowhere, which is no rdu.tensor

// -----

rdu.tensor @a : tensor<4xbf16> kv_cache tier hbm
rdu.tensor @t : tensor<4xbf16> kv_cache tier ddr aliases @a
// CHECK: 'rdu.tensor' @t aliases @a: it needs the same type and tier and no sources of its own

// --- kernels, sections, units ---

// -----

rdu.kernel @k {
  rdu.param "x" : tensor<4xbf16>
}
// CHECK: 'rdu.kernel' @k has no rdu.section

// -----

rdu.kernel @k {
  rdu.section pcus 2 pmus 0 sram_bytes 0 {
    rdu.buffer "x" : tensor<4xbf16>
    %s = rdu.pcu silu "s" count 1 simd reads [#rdu.access<"x" [0:4]>] write <"x" [0:4]> work <flops 0 bytes_read 8 bytes_written 8 tiles 1> : () -> !rdu.stream<tensor<4xbf16>, 2>
  }
}
// CHECK: 'rdu.section' declares pcus 2 but its units use 1

// -----

rdu.kernel @k {
  rdu.hw_loop trips 0 prefetch 0 stacked [] {
    rdu.section pcus 0 pmus 0 sram_bytes 0 {
      rdu.buffer "x" : tensor<4xbf16>
    }
  }
}
// CHECK: 'rdu.hw_loop' trips must be >= 1, got 0

// -----

rdu.kernel @k {
  rdu.hw_loop trips 2 prefetch -1 stacked [] {
    rdu.section pcus 0 pmus 0 sram_bytes 0 {
      rdu.buffer "x" : tensor<4xbf16>
    }
  }
}
// CHECK: 'rdu.hw_loop' prefetch must be >= 0, got -1

// -----

rdu.kernel @k {
  rdu.section pcus 0 pmus 0 sram_bytes 0 {
    %s = rdu.pcu silu "s" count 0 simd reads [#rdu.access<"x" [0:4]>] write <"x" [0:4]> work <flops 0 bytes_read 8 bytes_written 8 tiles 1> : () -> !rdu.stream<tensor<4xbf16>, 2>
  }
}
// CHECK: 'rdu.pcu' count must be >= 1, got 0

// -----

// A PCU runs a compute op of the numerics (collectives run on AGCUs).
rdu.kernel @k {
  rdu.section pcus 1 pmus 0 sram_bytes 0 {
    %s = rdu.pcu all_reduce "s" count 1 simd reads [#rdu.access<"x" [0:4]>] write <"x" [0:4]> work <flops 0 bytes_read 8 bytes_written 8 tiles 1> : () -> !rdu.stream<tensor<4xbf16>, 2>
  }
}
// CHECK:      invalid.mlir:[[# @LINE - 3]]:18
// CHECK:      Expected `embedding`, `rms_norm`,

// -----

rdu.kernel @k {
  rdu.section pcus 0 pmus 0 sram_bytes 0 {
    %s = rdu.pmu "copy" "p" count 1 sram_bytes 0 buffers 2 reads [#rdu.access<"x" [0:4]>] write <"x" [0:4]> work <flops 0 bytes_read 8 bytes_written 8 tiles 1> : () -> !rdu.stream<tensor<4xbf16>, 2>
  }
}
// CHECK: 'rdu.pmu' sram_bytes must be >= 1, got 0

// -----

rdu.kernel @k {
  %s = rdu.agcu "load" "l" count 1 reads [#rdu.access<"x" [0:4]>] write <"y" [0:4]> work <flops 0 bytes_read 8 bytes_written 8 tiles 1> : () -> !rdu.stream<tensor<4xbf16>, 2>
  rdu.section pcus 0 pmus 0 sram_bytes 0 {
    rdu.buffer "x" : tensor<4xbf16>
  }
}
// CHECK: 'rdu.agcu' expects parent op 'rdu.section'

// --- host side ---

// -----

func.func @main() {
  rdu.launch @main mode software label "" bindings [] {layers = array<i64>}
  func.return
}
// CHECK: 'rdu.launch' @main is no rdu.kernel

// -----

rdu.kernel @k {
  rdu.section pcus 0 pmus 0 sram_bytes 0 {
    rdu.buffer "x" : tensor<4xbf16>
  }
}
// (Only one error per case: xDSL verifies an op's traits in no fixed order.)
rdu.launch @k mode hardware label "" bindings [] {layers = array<i64>}
// CHECK: 'rdu.launch' expects ancestor op 'func.func'

// -----

rdu.sync
// CHECK: 'rdu.sync' expects ancestor op 'func.func'

// -----

func.func @main() {
  rdu.launch @nowhere mode software label "" bindings [] {layers = array<i64>}
  func.return
}
// CHECK: 'rdu.launch' @nowhere is no rdu.kernel

// -----

rdu.kernel @k {
  rdu.param "x" : tensor<4xbf16>
  rdu.hw_loop trips 2 prefetch 1 stacked ["w"] {
    rdu.section pcus 0 pmus 0 sram_bytes 0 {
      rdu.buffer "y" : tensor<4xbf16>
    }
  }
}
// CHECK: 'rdu.kernel' @k: stacked 'w' is not a param

// -----

rdu.kernel @k {
  rdu.param "x" : tensor<4xbf16>
  rdu.section pcus 0 pmus 0 sram_bytes 0 {
    rdu.buffer "y" : tensor<4xbf16>
    %s = rdu.agcu "load" "l" count 1 reads [#rdu.access<"x" [0:4]>] write <"z" [0:4]> work <flops 0 bytes_read 8 bytes_written 8 tiles 1> : () -> !rdu.stream<tensor<4xbf16>, 2>
  }
}
// CHECK: 'rdu.kernel' @k: unit 'l' accesses 'z', neither a param nor a buffer of its section

// -----

rdu.kernel @k {
  rdu.param "x" : tensor<4xbf16>
  rdu.section pcus 0 pmus 0 sram_bytes 0 {
    rdu.buffer "y" : tensor<4xbf16>
  }
}
func.func @main() {
  rdu.launch @k mode software label "" bindings [#rdu.bind<"w" [@t]>] {layers = array<i64>}
  func.return
}
// CHECK: 'rdu.launch' @k must bind each of its params ['x'] once, binds ['w']

// -----

// A kernel around its loop: sections before it run once (a prologue), so they cannot read a
// stacked param (one tensor per trip).
rdu.kernel @k {
  rdu.param "w" : tensor<4xbf16>
  rdu.section pcus 0 pmus 0 sram_bytes 0 {
    rdu.buffer "y" : tensor<4xbf16>
    %s = rdu.agcu "load" "l" count 1 reads [#rdu.access<"w" [0:4]>] write <"y" [0:4]> work <flops 0 bytes_read 8 bytes_written 8 tiles 1> : () -> !rdu.stream<tensor<4xbf16>, 2>
  }
  rdu.hw_loop trips 2 prefetch 1 stacked ["w"] {
    rdu.section pcus 0 pmus 0 sram_bytes 0 {
      rdu.buffer "z" : tensor<4xbf16>
    }
  }
}
// CHECK: 'rdu.kernel' @k: unit 'l' runs once, outside the rdu.hw_loop, but accesses stacked param 'w'

// -----

rdu.kernel @k {
  rdu.param "w" : tensor<4xbf16>
  rdu.hw_loop trips 2 prefetch 1 stacked ["w"] {
    rdu.section pcus 0 pmus 0 sram_bytes 0 {
      rdu.buffer "y" : tensor<4xbf16>
    }
  }
  rdu.hw_loop trips 2 prefetch 1 stacked ["w"] {
    rdu.section pcus 0 pmus 0 sram_bytes 0 {
      rdu.buffer "z" : tensor<4xbf16>
    }
  }
}
// CHECK: 'rdu.kernel' @k has more than one rdu.hw_loop

// -----

rdu.kernel @k {
  rdu.param "w" : tensor<4xbf16>
  rdu.section pcus 0 pmus 0 sram_bytes 0 {
    rdu.buffer "y" : tensor<4xbf16>
  }
  rdu.hw_loop trips 2 prefetch 1 stacked ["w"] {
  ^bb0:
  }
}
// CHECK: 'rdu.kernel' @k: its rdu.hw_loop has no section

// -----

rdu.kernel @k {
  rdu.param "w" : tensor<4xbf16>
  rdu.section pcus 0 pmus 0 sram_bytes 0 configured_with_previous {
    rdu.buffer "y" : tensor<4xbf16>
  }
}
// CHECK: 'rdu.kernel' @k: its first section has no previous section to be configured with
