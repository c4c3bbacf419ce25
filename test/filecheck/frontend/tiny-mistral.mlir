// RUN: rdu-import tiny-mistral --context 16 | filecheck %s
// RUN: rdu-import tiny-mistral --context 16 | rdu-opt --print-op-generic | rdu-opt | filecheck %s
// RUN: rdu-import tiny-mistral --context 8 | filecheck %s --check-prefix=SHORT

// Mistral: sliding window 8 on every layer. With a 16-token cache every attention carries
// it; with an 8-token cache the window masks nothing, so no attention does.

// CHECK:      builtin.module attributes {llm.model = "tiny-mistral"} {
// CHECK:        llm.param @lm_head.weight
// CHECK:        llm.attention {{.*}} {llm.layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, sliding_window = 8 : i64} : tensor<1x64xbf16>, tensor<1x2x16x16xbf16>
// CHECK:        llm.attention {{.*}} {llm.layer = 1 : i64, {{.*}}, sliding_window = 8 : i64}
// CHECK:        llm.attention {{.*}} {llm.layer = 2 : i64, {{.*}}, sliding_window = 8 : i64}
// CHECK:        llm.attention {{.*}} {llm.layer = 3 : i64, {{.*}}, sliding_window = 8 : i64}
// CHECK-NOT:    llm.attention

// SHORT:        func.func @decode_step({{.*}}: tensor<4x1x2x8x16xbf16>
// SHORT-NOT:    sliding_window
