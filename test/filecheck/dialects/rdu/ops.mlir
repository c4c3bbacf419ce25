// RUN: rdu-opt %s | filecheck %s
// RUN: rdu-opt %s | %roundtrip | filecheck %s
// RUN: rdu-opt %s | %generic-roundtrip | filecheck %s

// A small complete program: values, a weight in DDR sharded over sockets, a KV cache and its
// in-place update (alias), a looped kernel (load -> pmu -> pcu x2 -> store) whose stacked
// weight takes one tensor per trip, and the host launching it and syncing. A unit's attributes
// keep their types (an f32, a #llm.rope_scaling).

// CHECK:      rdu.value "model.layers.0.mlp.up_proj.weight" param : tensor<32x16xbf16>
// CHECK-NEXT: rdu.value "x" input : tensor<2x16xbf16>
// CHECK-NEXT: rdu.tensor @w0 : tensor<16x16xbf16> weight tier ddr sources [#rdu.source<"model.layers.0.mlp.up_proj.weight" [0, 0] x [16, 16] at [0, 0] step [16, 0]>]
// CHECK-NEXT: rdu.tensor @w1 : tensor<16x16xbf16> weight tier hbm sources [#rdu.source<"model.layers.0.mlp.up_proj.weight" [0, 0] x [16, 16] at [0, 0] step [16, 0] group 2>]
// CHECK-NEXT: rdu.tensor @e : tensor<1x16x16xbf16> weight tier hbm sources [#rdu.source<"model.layers.0.mlp.up_proj.weight" [0, 0] x [16, 16] at [0, 0, 0] sockets [0]>, #rdu.source<"model.layers.0.mlp.up_proj.weight" [16, 0] x [16, 16] at [0, 0, 0] sockets [1]>]
// CHECK-NEXT: rdu.tensor @h : tensor<2x16xbf16> activation tier hbm
// CHECK-NEXT: rdu.tensor @h.out : tensor<2x16xbf16> activation tier hbm aliases @h
rdu.value "model.layers.0.mlp.up_proj.weight" param : tensor<32x16xbf16>
rdu.value "x" input : tensor<2x16xbf16>
rdu.tensor @w0 : tensor<16x16xbf16> weight tier ddr sources [#rdu.source<"model.layers.0.mlp.up_proj.weight" [0, 0] x [16, 16] at [0, 0] step [16, 0]>]
rdu.tensor @w1 : tensor<16x16xbf16> weight tier hbm sources [#rdu.source<"model.layers.0.mlp.up_proj.weight" [0, 0] x [16, 16] at [0, 0] step [16, 0] group 2>]
rdu.tensor @e : tensor<1x16x16xbf16> weight tier hbm sources [#rdu.source<"model.layers.0.mlp.up_proj.weight" [0, 0] x [16, 16] at [0, 0, 0] sockets [0]>, #rdu.source<"model.layers.0.mlp.up_proj.weight" [16, 0] x [16, 16] at [0, 0, 0] sockets [1]>]
rdu.tensor @h : tensor<2x16xbf16> activation tier hbm
rdu.tensor @h.out : tensor<2x16xbf16> activation tier hbm aliases @h

// CHECK:      rdu.kernel @up {
// CHECK-NEXT:   rdu.param "h" : tensor<2x16xbf16>
// CHECK-NEXT:   rdu.param "w" : tensor<16x16xbf16>
// CHECK-NEXT:   rdu.hw_loop trips 2 prefetch 1 stacked ["w"] {
// CHECK-NEXT:     rdu.section pcus 3 pmus 2 sram_bytes 1024 {
// CHECK-NEXT:       rdu.buffer "x" : tensor<2x16xbf16>
// CHECK:            [[X:%.*]] = rdu.agcu "load" "ld.h" count 1 reads [#rdu.access<"h" [0:2, 0:16]>] write <"x" [0:2, 0:16]> work <flops 0 bytes_read 64 bytes_written 64 tiles 1> : () -> !rdu.stream<tensor<32xbf16>, 2>
// CHECK:            rdu.agcu "load" "ld.w" {{.*}} work <flops 0 bytes_read 512 bytes_written 512 tiles 2 roofline_bytes 256>
// CHECK:            [[S:%.*]] = rdu.pmu "copy" "stage.w" count 2 sram_bytes 512 buffers 2 ([[W:%.*]]) reads
// CHECK-NEXT:       [[Y:%.*]] = rdu.pcu linear "y" count 2 systolic attrs {accumulate_only = false} ([[X]], [[S]]) reads [#rdu.access<"x" [0:2, 0:16]>, #rdu.access<"ws" [0:8, 0:16] step [8, 0]>] write <"y" [0:2, 0:8] step [0, 8]>
// CHECK-NEXT:       rdu.agcu "all_gather" "gather.y" count 1 attrs {dim = 1 : i64} ([[Y]]) reads [#rdu.access<"y" [0:2, 0:16]>] write <"g" [0:2, 0:32]>
// CHECK-NEXT:       rdu.pcu rope "rope.y" count 1 simd attrs {head_dim = 8 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<llama3, factor = 4.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 32>} ([[Y]])
rdu.kernel @up {
  rdu.param "h" : tensor<2x16xbf16>
  rdu.param "w" : tensor<16x16xbf16>
  rdu.hw_loop trips 2 prefetch 1 stacked ["w"] {
    rdu.section pcus 3 pmus 2 sram_bytes 1024 {
      rdu.buffer "x" : tensor<2x16xbf16>
      rdu.buffer "wl" : tensor<16x16xbf16>
      rdu.buffer "ws" : tensor<16x16xbf16>
      rdu.buffer "y" : tensor<2x16xbf16>
      rdu.buffer "g" : tensor<2x32xbf16>
      rdu.buffer "pos" : tensor<2xi32>
      rdu.buffer "r" : tensor<2x16xbf16>
      %x = rdu.agcu "load" "ld.h" count 1 reads [#rdu.access<"h" [0:2, 0:16]>] write <"x" [0:2, 0:16]> work <flops 0 bytes_read 64 bytes_written 64 tiles 1> : () -> !rdu.stream<tensor<32xbf16>, 2>
      %w = rdu.agcu "load" "ld.w" count 2 reads [#rdu.access<"w" [0:8, 0:16] step [8, 0]>] write <"wl" [0:8, 0:16] step [8, 0]> work <flops 0 bytes_read 512 bytes_written 512 tiles 2 roofline_bytes 256> : () -> !rdu.stream<tensor<128xbf16>, 2>
      %s = rdu.pmu "copy" "stage.w" count 2 sram_bytes 512 buffers 2 (%w) reads [#rdu.access<"wl" [0:8, 0:16] step [8, 0]>] write <"ws" [0:8, 0:16] step [8, 0]> work <flops 0 bytes_read 512 bytes_written 512 tiles 2> : (!rdu.stream<tensor<128xbf16>, 2>) -> !rdu.stream<tensor<128xbf16>, 2>
      %y = rdu.pcu linear "y" count 2 systolic attrs {accumulate_only = false} (%x, %s) reads [#rdu.access<"x" [0:2, 0:16]>, #rdu.access<"ws" [0:8, 0:16] step [8, 0]>] write <"y" [0:2, 0:8] step [0, 8]> work <flops 1024 bytes_read 576 bytes_written 64 tiles 2> : (!rdu.stream<tensor<32xbf16>, 2>, !rdu.stream<tensor<128xbf16>, 2>) -> !rdu.stream<tensor<32xbf16>, 2>
      %g = rdu.agcu "all_gather" "gather.y" count 1 attrs {dim = 1 : i64} (%y) reads [#rdu.access<"y" [0:2, 0:16]>] write <"g" [0:2, 0:32]> work <flops 0 bytes_read 64 bytes_written 128 tiles 1> : (!rdu.stream<tensor<32xbf16>, 2>) -> !rdu.stream<tensor<64xbf16>, 2>
      %r = rdu.pcu rope "rope.y" count 1 simd attrs {head_dim = 8 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<llama3, factor = 4.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 32>} (%y) reads [#rdu.access<"y" [0:2, 0:16]>, #rdu.access<"pos" [0:2]>] write <"r" [0:2, 0:16]> work <flops 0 bytes_read 72 bytes_written 64 tiles 1> : (!rdu.stream<tensor<32xbf16>, 2>) -> !rdu.stream<tensor<32xbf16>, 2>
      %o = rdu.agcu "store" "st.h" count 1 (%y) reads [#rdu.access<"y" [0:2, 0:16]>] write <"h" [0:2, 0:16]> work <flops 0 bytes_read 64 bytes_written 64 tiles 1> : (!rdu.stream<tensor<32xbf16>, 2>) -> !rdu.stream<tensor<32xbf16>, 2>
    }
  }
}

// CHECK:      func.func @main() {
// CHECK-NEXT:   rdu.launch @up mode hardware label "layers 0-1" bindings [#rdu.bind<"h" [@h]>, #rdu.bind<"w" [@w0, @w1]>] {layers = array<i64: 0, 1>}
// CHECK-NEXT:   rdu.sync
func.func @main() {
  rdu.launch @up mode hardware label "layers 0-1" bindings [#rdu.bind<"h" [@h]>, #rdu.bind<"w" [@w0, @w1]>] {layers = array<i64: 0, 1>}
  rdu.sync
  func.return
}
