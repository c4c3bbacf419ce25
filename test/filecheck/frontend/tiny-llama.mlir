// RUN: rdu-import tiny-llama --context 16 | filecheck %s
// RUN: rdu-import tiny-llama --context 16 | rdu-opt --print-op-generic | rdu-opt | filecheck %s
// RUN: rdu-import tiny-llama --context 16 --print-debuginfo | filecheck %s --check-prefix=LOC

// Llama: GQA (4 heads, 2 KV heads), llama3 rope scaling, tied embeddings (no lm_head.weight
// param: the LM head reads the embedding table). The whole of layer 0, in contract order.

// CHECK:      builtin.module attributes {llm.model = "tiny-llama"} {
// CHECK-NEXT:   llm.param @model.embed_tokens.weight "model.embed_tokens.weight" : tensor<256x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.input_layernorm.weight "model.layers.0.input_layernorm.weight" : tensor<64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.q_proj.weight "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.k_proj.weight "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.v_proj.weight "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.self_attn.o_proj.weight "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.post_attention_layernorm.weight "model.layers.0.post_attention_layernorm.weight" : tensor<64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.mlp.gate_proj.weight "model.layers.0.mlp.gate_proj.weight" : tensor<128x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.mlp.up_proj.weight "model.layers.0.mlp.up_proj.weight" : tensor<128x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.mlp.down_proj.weight "model.layers.0.mlp.down_proj.weight" : tensor<64x128xbf16>
// CHECK-NEXT:   llm.param @model.layers.1.input_layernorm.weight
// CHECK:        llm.param @model.layers.3.mlp.down_proj.weight "model.layers.3.mlp.down_proj.weight" : tensor<64x128xbf16>
// CHECK-NEXT:   llm.param @model.norm.weight "model.norm.weight" : tensor<64xbf16>
// CHECK-NOT:    lm_head.weight
// CHECK-NEXT:   func.func @decode_step([[TOKENS:%.*]]: tensor<1xi32>, [[POS:%.*]]: tensor<1xi32>, [[KCACHE:%.*]]: tensor<4x1x2x16x16xbf16>, [[VCACHE:%.*]]: tensor<4x1x2x16x16xbf16>) -> (tensor<1x256xbf16>, tensor<1xi32>, tensor<4x1x2x16x16xbf16>, tensor<4x1x2x16x16xbf16>) {
// CHECK-NEXT:     [[EMB:%.*]] = llm.weight @model.embed_tokens.weight : tensor<256x64xbf16>
// CHECK-NEXT:     [[H0:%.*]] = llm.embedding [[EMB]], [[TOKENS]] : tensor<256x64xbf16>, tensor<1xi32> -> tensor<1x64xbf16>
// CHECK-NEXT:     [[KC:%.*]] = dfk.slice [[KCACHE]][0] : tensor<4x1x2x16x16xbf16> -> tensor<1x2x16x16xbf16>
// CHECK-NEXT:     [[VC:%.*]] = dfk.slice [[VCACHE]][0] : tensor<4x1x2x16x16xbf16> -> tensor<1x2x16x16xbf16>
// CHECK-NEXT:     [[LN1:%.*]] = llm.weight @model.layers.0.input_layernorm.weight {llm.layer = 0 : i64} : tensor<64xbf16>
// CHECK-NEXT:     [[X:%.*]] = llm.rms_norm [[H0]], [[LN1]] {llm.layer = 0 : i64, eps = 1.000000e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
// CHECK-NEXT:     [[WQ:%.*]] = llm.weight @model.layers.0.self_attn.q_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
// CHECK-NEXT:     [[Q:%.*]] = llm.linear [[X]], [[WQ]] {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<64x64xbf16> -> tensor<1x64xbf16>
// CHECK-NEXT:     [[WK:%.*]] = llm.weight @model.layers.0.self_attn.k_proj.weight {llm.layer = 0 : i64} : tensor<32x64xbf16>
// CHECK-NEXT:     [[K:%.*]] = llm.linear [[X]], [[WK]] {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<32x64xbf16> -> tensor<1x32xbf16>
// CHECK-NEXT:     [[WV:%.*]] = llm.weight @model.layers.0.self_attn.v_proj.weight {llm.layer = 0 : i64} : tensor<32x64xbf16>
// CHECK-NEXT:     [[V:%.*]] = llm.linear [[X]], [[WV]] {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<32x64xbf16> -> tensor<1x32xbf16>
// CHECK-NEXT:     [[QR:%.*]] = llm.rope [[Q]], [[POS]] {llm.layer = 0 : i64, head_dim = 16 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<llama3, factor = 4.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 32>} : tensor<1x64xbf16>, tensor<1xi32>
// CHECK-NEXT:     [[KR:%.*]] = llm.rope [[K]], [[POS]] {llm.layer = 0 : i64, head_dim = 16 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<llama3, factor = 4.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 32>} : tensor<1x32xbf16>, tensor<1xi32>
// CHECK-NEXT:     [[KC0:%.*]] = llm.kv_cache_write [[KC]], [[KR]], [[POS]] {llm.layer = 0 : i64} : tensor<1x2x16x16xbf16>, tensor<1x32xbf16>, tensor<1xi32>
// CHECK-NEXT:     [[VC0:%.*]] = llm.kv_cache_write [[VC]], [[V]], [[POS]] {llm.layer = 0 : i64} : tensor<1x2x16x16xbf16>, tensor<1x32xbf16>, tensor<1xi32>
// CHECK-NEXT:     [[A:%.*]] = llm.attention [[QR]], [[KC0]], [[VC0]], [[POS]] {llm.layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1x2x16x16xbf16>, tensor<1xi32>
// CHECK-NEXT:     [[WO:%.*]] = llm.weight @model.layers.0.self_attn.o_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
// CHECK-NEXT:     [[O:%.*]] = llm.linear [[A]], [[WO]] {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<64x64xbf16> -> tensor<1x64xbf16>
// CHECK-NEXT:     [[H1:%.*]] = llm.add [[H0]], [[O]] {llm.layer = 0 : i64} : tensor<1x64xbf16>
// CHECK-NEXT:     [[LN2:%.*]] = llm.weight @model.layers.0.post_attention_layernorm.weight {llm.layer = 0 : i64} : tensor<64xbf16>
// CHECK-NEXT:     [[Y:%.*]] = llm.rms_norm [[H1]], [[LN2]] {llm.layer = 0 : i64, eps = 1.000000e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
// CHECK-NEXT:     [[WG:%.*]] = llm.weight @model.layers.0.mlp.gate_proj.weight {llm.layer = 0 : i64} : tensor<128x64xbf16>
// CHECK-NEXT:     [[G:%.*]] = llm.linear [[Y]], [[WG]] {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<128x64xbf16> -> tensor<1x128xbf16>
// CHECK-NEXT:     [[WU:%.*]] = llm.weight @model.layers.0.mlp.up_proj.weight {llm.layer = 0 : i64} : tensor<128x64xbf16>
// CHECK-NEXT:     [[U:%.*]] = llm.linear [[Y]], [[WU]] {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<128x64xbf16> -> tensor<1x128xbf16>
// CHECK-NEXT:     [[S:%.*]] = llm.silu [[G]] {llm.layer = 0 : i64} : tensor<1x128xbf16>
// CHECK-NEXT:     [[GU:%.*]] = llm.mul [[S]], [[U]] {llm.layer = 0 : i64} : tensor<1x128xbf16>
// CHECK-NEXT:     [[WD:%.*]] = llm.weight @model.layers.0.mlp.down_proj.weight {llm.layer = 0 : i64} : tensor<64x128xbf16>
// CHECK-NEXT:     [[D:%.*]] = llm.linear [[GU]], [[WD]] {llm.layer = 0 : i64} : tensor<1x128xbf16>, tensor<64x128xbf16> -> tensor<1x64xbf16>
// CHECK-NEXT:     [[H2:%.*]] = llm.add [[H1]], [[D]] {llm.layer = 0 : i64} : tensor<1x64xbf16>
// CHECK-NEXT:     [[KC1:%.*]] = dfk.slice [[KCACHE]][1] : tensor<4x1x2x16x16xbf16> -> tensor<1x2x16x16xbf16>
// CHECK-NEXT:     [[VC1:%.*]] = dfk.slice [[VCACHE]][1] : tensor<4x1x2x16x16xbf16> -> tensor<1x2x16x16xbf16>
// CHECK-NEXT:     llm.weight @model.layers.1.input_layernorm.weight {llm.layer = 1 : i64}
// CHECK-NEXT:     llm.rms_norm [[H2]], {{%.*}} {llm.layer = 1 : i64,

// Later layers: every op carries its layer.
// CHECK:          llm.kv_cache_write {{.*}} {llm.layer = 1 : i64}
// CHECK:          llm.attention {{.*}} {llm.layer = 2 : i64,
// CHECK:          [[KC3:%.*]] = llm.kv_cache_write {{.*}} {llm.layer = 3 : i64}
// CHECK-NEXT:     [[VC3:%.*]] = llm.kv_cache_write {{.*}} {llm.layer = 3 : i64}
// CHECK:          llm.weight @model.layers.3.mlp.down_proj.weight {llm.layer = 3 : i64}
// CHECK-NEXT:     llm.linear {{.*}} {llm.layer = 3 : i64}
// CHECK-NEXT:     [[HL:%.*]] = llm.add {{.*}} {llm.layer = 3 : i64} : tensor<1x64xbf16>

// Final norm, tied LM head (reads the embedding table), argmax, stacked caches: no layer.
// CHECK-NEXT:     [[NW:%.*]] = llm.weight @model.norm.weight : tensor<64xbf16>
// CHECK-NEXT:     [[HN:%.*]] = llm.rms_norm [[HL]], [[NW]] {eps = 1.000000e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
// CHECK-NEXT:     [[HEAD:%.*]] = llm.weight @model.embed_tokens.weight : tensor<256x64xbf16>
// CHECK-NEXT:     [[LOGITS:%.*]] = llm.linear [[HN]], [[HEAD]] : tensor<1x64xbf16>, tensor<256x64xbf16> -> tensor<1x256xbf16>
// CHECK-NEXT:     [[NEXT:%.*]] = llm.argmax [[LOGITS]] : tensor<1x256xbf16> -> tensor<1xi32>
// CHECK-NEXT:     [[KOUT:%.*]] = dfk.stack [[KC0]], {{%.*}}, {{%.*}}, [[KC3]] : tensor<1x2x16x16xbf16> -> tensor<4x1x2x16x16xbf16>
// CHECK-NEXT:     [[VOUT:%.*]] = dfk.stack [[VC0]], {{%.*}}, {{%.*}}, [[VC3]] : tensor<1x2x16x16xbf16> -> tensor<4x1x2x16x16xbf16>
// CHECK-NEXT:     func.return [[LOGITS]], [[NEXT]], [[KOUT]], [[VOUT]] : tensor<1x256xbf16>, tensor<1xi32>, tensor<4x1x2x16x16xbf16>, tensor<4x1x2x16x16xbf16>
// CHECK-NEXT:   }
// CHECK-NEXT: }

// Locations name the source module (diagnostics only).
// LOC: llm.param @model.embed_tokens.weight {{.*}} loc("model.embed_tokens.weight")
// LOC: llm.embedding {{.*}} loc("model.embed_tokens")
// LOC: llm.linear {{.*}} loc("model.layers.0.self_attn.q_proj")
// LOC: llm.rope {{.*}} loc("model.layers.0.self_attn.rotary_emb")
// LOC: llm.attention {{.*}} loc("model.layers.0.self_attn")
// LOC: llm.silu {{.*}} loc("model.layers.0.mlp.act_fn")
// LOC: llm.linear {{.*}} loc("model.layers.3.mlp.down_proj")
// LOC: llm.linear {{.*}} loc("lm_head")
