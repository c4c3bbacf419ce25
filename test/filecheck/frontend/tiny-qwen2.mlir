// RUN: rdu-import tiny-qwen2 --context 16 --batch 2 | filecheck %s
// RUN: rdu-import tiny-qwen2 --context 16 --batch 2 | rdu-opt --print-op-generic | rdu-opt | filecheck %s

// Qwen2: q/k/v projections with a bias (o_proj and MLP without), untied LM head, batch 2.

// CHECK:      builtin.module attributes {llm.model = "tiny-qwen2"} {
// CHECK:        llm.param @model.layers.0.self_attn.v_proj.weight "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.q_proj.bias "model.layers.0.self_attn.q_proj.bias" : tensor<64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.k_proj.bias "model.layers.0.self_attn.k_proj.bias" : tensor<32xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.v_proj.bias "model.layers.0.self_attn.v_proj.bias" : tensor<32xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.o_proj.weight
// CHECK-NOT:    o_proj.bias
// CHECK:        llm.param @model.norm.weight "model.norm.weight" : tensor<64xbf16>
// CHECK-NEXT:   llm.param @lm_head.weight "lm_head.weight" : tensor<256x64xbf16>
// CHECK-NEXT:   func.func @decode_step({{%.*}}: tensor<2xi32>, [[POS:%.*]]: tensor<2xi32>, {{%.*}}: tensor<4x2x2x16x16xbf16>, {{%.*}}: tensor<4x2x2x16x16xbf16>) -> (tensor<2x256xbf16>, tensor<2xi32>, tensor<4x2x2x16x16xbf16>, tensor<4x2x2x16x16xbf16>) {
// CHECK:          [[X:%.*]] = llm.rms_norm {{.*}} {llm.layer = 0 : i64, eps = 1.000000e-06 : f32}
// CHECK-NEXT:     [[WQ:%.*]] = llm.weight @model.layers.0.self_attn.q_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
// CHECK-NEXT:     [[BQ:%.*]] = llm.weight @model.layers.0.self_attn.q_proj.bias {llm.layer = 0 : i64} : tensor<64xbf16>
// CHECK-NEXT:     {{%.*}} = llm.linear [[X]], [[WQ]], [[BQ]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<2x64xbf16>
// CHECK-NEXT:     [[WK:%.*]] = llm.weight @model.layers.0.self_attn.k_proj.weight
// CHECK-NEXT:     [[BK:%.*]] = llm.weight @model.layers.0.self_attn.k_proj.bias
// CHECK-NEXT:     {{%.*}} = llm.linear [[X]], [[WK]], [[BK]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<2x32xbf16>
// CHECK-NEXT:     [[WV:%.*]] = llm.weight @model.layers.0.self_attn.v_proj.weight
// CHECK-NEXT:     [[BV:%.*]] = llm.weight @model.layers.0.self_attn.v_proj.bias
// CHECK-NEXT:     {{%.*}} = llm.linear [[X]], [[WV]], [[BV]] {llm.layer = 0 : i64}
// CHECK-NEXT:     llm.rope {{.*}}, [[POS]] {llm.layer = 0 : i64, head_dim = 16 : i64, theta = 1.000000e+06 : f32} : tensor<2x64xbf16>, tensor<2xi32>
// CHECK:          llm.attention {{.*}} {llm.layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} :
// CHECK-NEXT:     [[WO:%.*]] = llm.weight @model.layers.0.self_attn.o_proj.weight
// CHECK-NEXT:     {{%.*}} = llm.linear {{%.*}}, [[WO]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<64x64xbf16> -> tensor<2x64xbf16>
// CHECK:          [[HN:%.*]] = llm.rms_norm {{.*}} {eps = 1.000000e-06 : f32} : tensor<2x64xbf16>, tensor<64xbf16>
// CHECK-NEXT:     [[HEAD:%.*]] = llm.weight @lm_head.weight : tensor<256x64xbf16>
// CHECK-NEXT:     {{%.*}} = llm.linear [[HN]], [[HEAD]] : tensor<2x64xbf16>, tensor<256x64xbf16> -> tensor<2x256xbf16>
