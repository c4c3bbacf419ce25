// RUN: rdu-import tiny-qwen3 --context 16 | filecheck %s
// RUN: rdu-import tiny-qwen3 --context 16 | rdu-opt --print-op-generic | rdu-opt | filecheck %s

// Qwen3: per-head RMSNorm of q and k (weight [head_dim] = [32]) between the projections and
// rope; head_dim 32 makes q 128 wide with hidden 64; tied LM head.

// CHECK:      builtin.module attributes {llm.model = "tiny-qwen3"} {
// CHECK:        llm.param @model.layers.0.self_attn.q_norm.weight "model.layers.0.self_attn.q_norm.weight" : tensor<32xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.k_norm.weight "model.layers.0.self_attn.k_norm.weight" : tensor<32xbf16>
// CHECK-NOT:    lm_head.weight
// CHECK:        func.func @decode_step({{%.*}}: tensor<1xi32>, [[POS:%.*]]: tensor<1xi32>, {{%.*}}: tensor<4x1x2x16x32xbf16>, {{%.*}}: tensor<4x1x2x16x32xbf16>)
// CHECK:          [[Q:%.*]] = llm.linear {{.*}} {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<128x64xbf16> -> tensor<1x128xbf16>
// CHECK:          [[K:%.*]] = llm.linear {{.*}} {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<64x64xbf16> -> tensor<1x64xbf16>
// CHECK:          [[V:%.*]] = llm.linear
// CHECK-NEXT:     [[QNW:%.*]] = llm.weight @model.layers.0.self_attn.q_norm.weight {llm.layer = 0 : i64} : tensor<32xbf16>
// CHECK-NEXT:     [[QN:%.*]] = llm.rms_norm [[Q]], [[QNW]] {llm.layer = 0 : i64, eps = 1.000000e-06 : f32} : tensor<1x128xbf16>, tensor<32xbf16>
// CHECK-NEXT:     [[KNW:%.*]] = llm.weight @model.layers.0.self_attn.k_norm.weight {llm.layer = 0 : i64} : tensor<32xbf16>
// CHECK-NEXT:     [[KN:%.*]] = llm.rms_norm [[K]], [[KNW]] {llm.layer = 0 : i64, eps = 1.000000e-06 : f32} : tensor<1x64xbf16>, tensor<32xbf16>
// CHECK-NEXT:     [[QR:%.*]] = llm.rope [[QN]], [[POS]] {llm.layer = 0 : i64, head_dim = 32 : i64, theta = 1.000000e+06 : f32} : tensor<1x128xbf16>, tensor<1xi32>
// CHECK-NEXT:     [[KR:%.*]] = llm.rope [[KN]], [[POS]] {llm.layer = 0 : i64, head_dim = 32 : i64, theta = 1.000000e+06 : f32} : tensor<1x64xbf16>, tensor<1xi32>
// CHECK-NEXT:     [[KC:%.*]] = llm.kv_cache_write {{%.*}}, [[KR]], [[POS]] {llm.layer = 0 : i64} : tensor<1x2x16x32xbf16>, tensor<1x64xbf16>, tensor<1xi32>
// CHECK-NEXT:     [[VC:%.*]] = llm.kv_cache_write {{%.*}}, [[V]], [[POS]]
// CHECK-NEXT:     {{%.*}} = llm.attention [[QR]], [[KC]], [[VC]], [[POS]] {llm.layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 32 : i64} : tensor<1x128xbf16>, tensor<1x2x16x32xbf16>, tensor<1x2x16x32xbf16>, tensor<1xi32>
// CHECK:          [[HEAD:%.*]] = llm.weight @model.embed_tokens.weight : tensor<256x64xbf16>
// CHECK-NEXT:     {{%.*}} = llm.linear {{%.*}}, [[HEAD]] : tensor<1x64xbf16>, tensor<256x64xbf16> -> tensor<1x256xbf16>
