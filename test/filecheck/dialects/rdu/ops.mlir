// RUN: rdu-opt %s | filecheck %s
// RUN: rdu-opt %s | %roundtrip | filecheck %s
// RUN: rdu-opt %s | %generic-roundtrip | filecheck %s

// A small complete program: two layers' weights (the second in DDR, and a shard: rows 64..127
// of its checkpoint tensor), an activation, its in-place update and an output; one kernel
// load -> pmu -> pcu -> all_reduce -> pcu -> store with a hardware loop over the two layers
// (per-trip weights); an AGCU-only kernel with an all-reduce; the host launching both (one in
// each mode) and syncing.

// CHECK:      rdu.tensor @wq0 : tensor<64x64xbf16> tier hbm socket 0 source "model.layers.0.self_attn.q_proj.weight"
// CHECK-NEXT: rdu.tensor @wq1 : tensor<64x64xbf16> tier ddr socket 0 source "model.layers.1.self_attn.q_proj.weight" at [64, 0]
// CHECK-NEXT: rdu.tensor @h : tensor<16x64xbf16> tier hbm socket 1
// CHECK-NEXT: rdu.tensor @h_out : tensor<16x64xbf16> tier hbm socket 1 aliases @h
// CHECK-NEXT: rdu.tensor @out : tensor<16x64xbf16> tier ddr socket 1
rdu.tensor @wq0 : tensor<64x64xbf16> tier hbm socket 0 source "model.layers.0.self_attn.q_proj.weight"
rdu.tensor @wq1 : tensor<64x64xbf16> tier ddr socket 0 source "model.layers.1.self_attn.q_proj.weight" at [64, 0]
rdu.tensor @h : tensor<16x64xbf16> tier hbm socket 1
rdu.tensor @h_out : tensor<16x64xbf16> tier hbm socket 1 aliases @h
rdu.tensor @out : tensor<16x64xbf16> tier ddr socket 1

// CHECK:      rdu.kernel @layer pcus 9 pmus 2 sram_bytes 8192 {
// CHECK-NEXT:   [[H:%.*]] = rdu.load [@h] agcus 1 bytes 2048 : !rdu.stream<tensor<16x64xbf16>, 2>
// CHECK-NEXT:   [[B:%.*]] = rdu.pmu bytes 4096 count 2 buffers 2 ([[H]]) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xbf16>, 1>
// CHECK-NEXT:   rdu.hw_loop trips 2 prefetch 1 {
// CHECK-NEXT:     [[W:%.*]] = rdu.load [@wq0, @wq1] agcus 2 : !rdu.stream<tensor<16x64xbf16>, 2>
// CHECK-NEXT:     [[O:%.*]] = rdu.pcu "matmul" count 8 systolic ([[B]], [[W]]) flops 131072 : (!rdu.stream<tensor<16x64xbf16>, 1>, !rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xf32>, 2>
// CHECK-NEXT:     [[R:%.*]] = rdu.all_reduce [[O]] sockets 2 bytes 4096 : !rdu.stream<tensor<16x64xf32>, 2>
// CHECK-NEXT:     [[C:%.*]], [[D:%.*]] = rdu.pcu "rms_norm" count 1 simd ([[R]]) : (!rdu.stream<tensor<16x64xf32>, 2>) -> (!rdu.stream<tensor<16x64xbf16>, 2>, !rdu.stream<tensor<16x64xbf16>, 2>)
// CHECK-NEXT:     rdu.store [[C]] -> [@h_out] agcus 1 bytes 2048 : !rdu.stream<tensor<16x64xbf16>, 2>
// CHECK-NEXT:     rdu.store [[D]] -> [@out] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
// CHECK-NEXT:   }
// CHECK-NEXT: }
rdu.kernel @layer pcus 9 pmus 2 sram_bytes 8192 {
  %h = rdu.load [@h] agcus 1 bytes 2048 : !rdu.stream<tensor<16x64xbf16>, 2>
  %b = rdu.pmu bytes 4096 count 2 buffers 2 (%h) : (!rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xbf16>, 1>
  rdu.hw_loop trips 2 prefetch 1 {
    %w = rdu.load [@wq0, @wq1] agcus 2 : !rdu.stream<tensor<16x64xbf16>, 2>
    %o = rdu.pcu "matmul" count 8 systolic (%b, %w) flops 131072 : (!rdu.stream<tensor<16x64xbf16>, 1>, !rdu.stream<tensor<16x64xbf16>, 2>) -> !rdu.stream<tensor<16x64xf32>, 2>
    %r = rdu.all_reduce %o sockets 2 bytes 4096 : !rdu.stream<tensor<16x64xf32>, 2>
    %c, %d = rdu.pcu "rms_norm" count 1 simd (%r) : (!rdu.stream<tensor<16x64xf32>, 2>) -> (!rdu.stream<tensor<16x64xbf16>, 2>, !rdu.stream<tensor<16x64xbf16>, 2>)
    rdu.store %c -> [@h_out] agcus 1 bytes 2048 : !rdu.stream<tensor<16x64xbf16>, 2>
    rdu.store %d -> [@out] agcus 1 : !rdu.stream<tensor<16x64xbf16>, 2>
  }
}

// A kernel without PCUs or PMUs: AGCUs only (its totals are zero).
// CHECK:      rdu.kernel @reduce pcus 0 pmus 0 sram_bytes 0 {
// CHECK-NEXT:   [[X:%.*]] = rdu.load [@out] agcus 4 : !rdu.stream<tensor<16x64xbf16>, 4>
// CHECK-NEXT:   [[S:%.*]] = rdu.all_reduce [[X]] sockets 8 : !rdu.stream<tensor<16x64xbf16>, 4>
// CHECK-NEXT:   rdu.store [[S]] -> [@out] agcus 4 : !rdu.stream<tensor<16x64xbf16>, 4>
// CHECK-NEXT: }
rdu.kernel @reduce pcus 0 pmus 0 sram_bytes 0 {
  %x = rdu.load [@out] agcus 4 : !rdu.stream<tensor<16x64xbf16>, 4>
  %s = rdu.all_reduce %x sockets 8 : !rdu.stream<tensor<16x64xbf16>, 4>
  rdu.store %s -> [@out] agcus 4 : !rdu.stream<tensor<16x64xbf16>, 4>
}

// CHECK:      func.func @main() {
// CHECK-NEXT:   rdu.launch @layer mode hardware
// CHECK-NEXT:   rdu.launch @reduce mode software
// CHECK-NEXT:   rdu.sync
// CHECK-NEXT:   func.return
// CHECK-NEXT: }
func.func @main() {
  rdu.launch @layer mode hardware
  rdu.launch @reduce mode software
  rdu.sync
  func.return
}
