// RUN: rdu-opt %s | filecheck %s
// RUN: rdu-opt %s | %roundtrip | filecheck %s
// RUN: rdu-opt %s | %generic-roundtrip | filecheck %s
// A tiny Llama / Qwen-style model: vocab 128, hidden 64, 4 query heads and 2 kv heads of
// head_dim 16, MLP 128, context 32, batch 2. Stamped as an SPMD program of 2 sockets (for
// llm.all_gather, whose result is 2 blocks).
builtin.module attributes {llm.sockets = 2 : i64} {
// CHECK: builtin.module attributes {llm.sockets = 2 : i64} {
  llm.param @model.embed_tokens.weight "model.embed_tokens.weight" : tensor<128x64xbf16>
  // CHECK: llm.param @model.embed_tokens.weight "model.embed_tokens.weight" : tensor<128x64xbf16>
  llm.param @model.layers.0.input_layernorm.weight "model.layers.0.input_layernorm.weight" : tensor<64xbf16>
  // CHECK: llm.param @model.layers.0.input_layernorm.weight "model.layers.0.input_layernorm.weight" : tensor<64xbf16>
  llm.param @model.layers.0.self_attn.q_proj.weight "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
  // CHECK: llm.param @model.layers.0.self_attn.q_proj.weight "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
  llm.param @model.layers.0.self_attn.k_proj.weight "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xbf16>
  // CHECK: llm.param @model.layers.0.self_attn.k_proj.weight "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xbf16>
  llm.param @model.layers.0.self_attn.k_proj.bias "model.layers.0.self_attn.k_proj.bias" : tensor<32xbf16>
  // CHECK: llm.param @model.layers.0.self_attn.k_proj.bias "model.layers.0.self_attn.k_proj.bias" : tensor<32xbf16>
  llm.param @model.layers.0.self_attn.v_proj.weight "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xbf16>
  // CHECK: llm.param @model.layers.0.self_attn.v_proj.weight "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xbf16>
  llm.param @model.layers.0.self_attn.q_norm.weight "model.layers.0.self_attn.q_norm.weight" : tensor<16xbf16>
  // CHECK: llm.param @model.layers.0.self_attn.q_norm.weight "model.layers.0.self_attn.q_norm.weight" : tensor<16xbf16>
  llm.param @model.layers.0.self_attn.o_proj.weight "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xbf16>
  // CHECK: llm.param @model.layers.0.self_attn.o_proj.weight "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xbf16>
  llm.param @model.layers.0.post_attention_layernorm.weight "model.layers.0.post_attention_layernorm.weight" : tensor<64xbf16>
  // CHECK: llm.param @model.layers.0.post_attention_layernorm.weight "model.layers.0.post_attention_layernorm.weight" : tensor<64xbf16>
  llm.param @model.layers.0.mlp.gate_proj.weight "model.layers.0.mlp.gate_proj.weight" : tensor<128x64xbf16>
  // CHECK: llm.param @model.layers.0.mlp.gate_proj.weight "model.layers.0.mlp.gate_proj.weight" : tensor<128x64xbf16>
  llm.param @model.layers.0.mlp.up_proj.weight "model.layers.0.mlp.up_proj.weight" : tensor<128x64xbf16>
  // CHECK: llm.param @model.layers.0.mlp.up_proj.weight "model.layers.0.mlp.up_proj.weight" : tensor<128x64xbf16>
  llm.param @model.layers.0.mlp.down_proj.weight "model.layers.0.mlp.down_proj.weight" : tensor<64x128xbf16>
  // CHECK: llm.param @model.layers.0.mlp.down_proj.weight "model.layers.0.mlp.down_proj.weight" : tensor<64x128xbf16>
  llm.param @model.norm.weight "model.norm.weight" : tensor<64xbf16>
  // CHECK: llm.param @model.norm.weight "model.norm.weight" : tensor<64xbf16>
  llm.param @lm_head.weight "lm_head.weight" : tensor<128x64xbf16>
  // CHECK: llm.param @lm_head.weight "lm_head.weight" : tensor<128x64xbf16>
  // Stacked by layout: one slice per layer; a nested list for layers x experts.
  llm.param @layers.q_proj.weight stacked ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"] : tensor<2x64x64xbf16>
  // CHECK: llm.param @layers.q_proj.weight stacked ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"] : tensor<2x64x64xbf16>
  llm.param @layers.experts.w1 stacked [["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight"], ["model.layers.1.block_sparse_moe.experts.0.w1.weight", "model.layers.1.block_sparse_moe.experts.1.w1.weight"]] {llm.layer = 0 : i64} : tensor<2x2x128x64xbf16>
  // CHECK: llm.param @layers.experts.w1 stacked {{\[\[}}"model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight"], ["model.layers.1.block_sparse_moe.experts.0.w1.weight", "model.layers.1.block_sparse_moe.experts.1.w1.weight"]] {llm.layer = 0 : i64} : tensor<2x2x128x64xbf16>

  func.func @decode_step(%ids: tensor<2xi32>, %pos: tensor<2xi32>, %k_cache: tensor<2x2x32x16xbf16>, %v_cache: tensor<2x2x32x16xbf16>) -> (tensor<2xi32>, tensor<2x2x32x16xbf16>, tensor<2x2x32x16xbf16>) {
  // CHECK: func.func @decode_step([[IDS:%.*]]: tensor<2xi32>, [[POS:%.*]]: tensor<2xi32>, [[K_CACHE:%.*]]: tensor<2x2x32x16xbf16>, [[V_CACHE:%.*]]: tensor<2x2x32x16xbf16>) -> (tensor<2xi32>, tensor<2x2x32x16xbf16>, tensor<2x2x32x16xbf16>) {
    %table = llm.weight @model.embed_tokens.weight : tensor<128x64xbf16>
    // CHECK: [[TABLE:%.*]] = llm.weight @model.embed_tokens.weight : tensor<128x64xbf16>
    %h = llm.embedding %table, %ids : tensor<128x64xbf16>, tensor<2xi32> -> tensor<2x64xbf16>
    // CHECK: [[H:%.*]] = llm.embedding [[TABLE]], [[IDS]] : tensor<128x64xbf16>, tensor<2xi32> -> tensor<2x64xbf16>
    %ln1 = llm.weight @model.layers.0.input_layernorm.weight {llm.layer = 0 : i64} : tensor<64xbf16>
    // CHECK: [[LN1:%.*]] = llm.weight @model.layers.0.input_layernorm.weight {llm.layer = 0 : i64} : tensor<64xbf16>
    %x = llm.rms_norm %h, %ln1 {eps = 1.0e-05 : f32, llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<64xbf16>
    // CHECK: [[X:%.*]] = llm.rms_norm [[H]], [[LN1]] {llm.layer = 0 : i64, eps = 1.000000e-05 : f32} : tensor<2x64xbf16>, tensor<64xbf16>
    %wq = llm.weight @model.layers.0.self_attn.q_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
    // CHECK: [[WQ:%.*]] = llm.weight @model.layers.0.self_attn.q_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
    %q = llm.linear %x, %wq {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<64x64xbf16> -> tensor<2x64xbf16>
    // CHECK: [[Q:%.*]] = llm.linear [[X]], [[WQ]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<64x64xbf16> -> tensor<2x64xbf16>
    %wk = llm.weight @model.layers.0.self_attn.k_proj.weight {llm.layer = 0 : i64} : tensor<32x64xbf16>
    // CHECK: [[WK:%.*]] = llm.weight @model.layers.0.self_attn.k_proj.weight {llm.layer = 0 : i64} : tensor<32x64xbf16>
    %bk = llm.weight @model.layers.0.self_attn.k_proj.bias {llm.layer = 0 : i64} : tensor<32xbf16>
    // CHECK: [[BK:%.*]] = llm.weight @model.layers.0.self_attn.k_proj.bias {llm.layer = 0 : i64} : tensor<32xbf16>
    %k = llm.linear %x, %wk, %bk {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<2x32xbf16>
    // CHECK: [[K:%.*]] = llm.linear [[X]], [[WK]], [[BK]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<32x64xbf16>, tensor<32xbf16> -> tensor<2x32xbf16>
    %wv = llm.weight @model.layers.0.self_attn.v_proj.weight {llm.layer = 0 : i64} : tensor<32x64xbf16>
    // CHECK: [[WV:%.*]] = llm.weight @model.layers.0.self_attn.v_proj.weight {llm.layer = 0 : i64} : tensor<32x64xbf16>
    %v = llm.linear %x, %wv {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<32x64xbf16> -> tensor<2x32xbf16>
    // CHECK: [[V:%.*]] = llm.linear [[X]], [[WV]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<32x64xbf16> -> tensor<2x32xbf16>
    %qn = llm.weight @model.layers.0.self_attn.q_norm.weight {llm.layer = 0 : i64} : tensor<16xbf16>
    // CHECK: [[QN:%.*]] = llm.weight @model.layers.0.self_attn.q_norm.weight {llm.layer = 0 : i64} : tensor<16xbf16>
    %q_normed = llm.rms_norm %q, %qn {eps = 1.0e-06 : f32, llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<16xbf16>
    // CHECK: [[Q_NORMED:%.*]] = llm.rms_norm [[Q]], [[QN]] {llm.layer = 0 : i64, eps = 1.000000e-06 : f32} : tensor<2x64xbf16>, tensor<16xbf16>
    %q_rot = llm.rope %q_normed, %pos {head_dim = 16 : i64, theta = 5.0e+05 : f32, scaling = #llm.rope_scaling<llama3, factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>, llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<2xi32>
    // CHECK: [[Q_ROT:%.*]] = llm.rope [[Q_NORMED]], [[POS]] {llm.layer = 0 : i64, head_dim = 16 : i64, theta = 5.000000e+05 : f32, scaling = #llm.rope_scaling<llama3, factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>} : tensor<2x64xbf16>, tensor<2xi32>
    %k_rot = llm.rope %k, %pos {head_dim = 16 : i64, theta = 5.0e+05 : f32, scaling = #llm.rope_scaling<llama3, factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>, llm.layer = 0 : i64} : tensor<2x32xbf16>, tensor<2xi32>
    // CHECK: [[K_ROT:%.*]] = llm.rope [[K]], [[POS]] {llm.layer = 0 : i64, head_dim = 16 : i64, theta = 5.000000e+05 : f32, scaling = #llm.rope_scaling<llama3, factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>} : tensor<2x32xbf16>, tensor<2xi32>
    %k_cache_1 = llm.kv_cache_write %k_cache, %k_rot, %pos {llm.layer = 0 : i64} : tensor<2x2x32x16xbf16>, tensor<2x32xbf16>, tensor<2xi32>
    // CHECK: [[K_CACHE_1:%.*]] = llm.kv_cache_write [[K_CACHE]], [[K_ROT]], [[POS]] {llm.layer = 0 : i64} : tensor<2x2x32x16xbf16>, tensor<2x32xbf16>, tensor<2xi32>
    %v_cache_1 = llm.kv_cache_write %v_cache, %v, %pos {llm.layer = 0 : i64} : tensor<2x2x32x16xbf16>, tensor<2x32xbf16>, tensor<2xi32>
    // CHECK: [[V_CACHE_1:%.*]] = llm.kv_cache_write [[V_CACHE]], [[V]], [[POS]] {llm.layer = 0 : i64} : tensor<2x2x32x16xbf16>, tensor<2x32xbf16>, tensor<2xi32>
    %attn = llm.attention %q_rot, %k_cache_1, %v_cache_1, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<2x2x32x16xbf16>, tensor<2x2x32x16xbf16>, tensor<2xi32>
    // CHECK: [[ATTN:%.*]] = llm.attention [[Q_ROT]], [[K_CACHE_1]], [[V_CACHE_1]], [[POS]] {llm.layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<2x64xbf16>, tensor<2x2x32x16xbf16>, tensor<2x2x32x16xbf16>, tensor<2xi32>
    %wo = llm.weight @model.layers.0.self_attn.o_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
    // CHECK: [[WO:%.*]] = llm.weight @model.layers.0.self_attn.o_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
    %o = llm.linear %attn, %wo {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<64x64xbf16> -> tensor<2x64xbf16>
    // CHECK: [[O:%.*]] = llm.linear [[ATTN]], [[WO]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<64x64xbf16> -> tensor<2x64xbf16>
    %h1 = llm.add %h, %o {llm.layer = 0 : i64} : tensor<2x64xbf16>
    // CHECK: [[H1:%.*]] = llm.add [[H]], [[O]] {llm.layer = 0 : i64} : tensor<2x64xbf16>
    %ln2 = llm.weight @model.layers.0.post_attention_layernorm.weight {llm.layer = 0 : i64} : tensor<64xbf16>
    // CHECK: [[LN2:%.*]] = llm.weight @model.layers.0.post_attention_layernorm.weight {llm.layer = 0 : i64} : tensor<64xbf16>
    %y = llm.rms_norm %h1, %ln2 {eps = 1.0e-05 : f32, llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<64xbf16>
    // CHECK: [[Y:%.*]] = llm.rms_norm [[H1]], [[LN2]] {llm.layer = 0 : i64, eps = 1.000000e-05 : f32} : tensor<2x64xbf16>, tensor<64xbf16>
    %wg = llm.weight @model.layers.0.mlp.gate_proj.weight {llm.layer = 0 : i64} : tensor<128x64xbf16>
    // CHECK: [[WG:%.*]] = llm.weight @model.layers.0.mlp.gate_proj.weight {llm.layer = 0 : i64} : tensor<128x64xbf16>
    %wu = llm.weight @model.layers.0.mlp.up_proj.weight {llm.layer = 0 : i64} : tensor<128x64xbf16>
    // CHECK: [[WU:%.*]] = llm.weight @model.layers.0.mlp.up_proj.weight {llm.layer = 0 : i64} : tensor<128x64xbf16>
    %wd = llm.weight @model.layers.0.mlp.down_proj.weight {llm.layer = 0 : i64} : tensor<64x128xbf16>
    // CHECK: [[WD:%.*]] = llm.weight @model.layers.0.mlp.down_proj.weight {llm.layer = 0 : i64} : tensor<64x128xbf16>
    %g = llm.linear %y, %wg {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<128x64xbf16> -> tensor<2x128xbf16>
    // CHECK: [[G:%.*]] = llm.linear [[Y]], [[WG]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<128x64xbf16> -> tensor<2x128xbf16>
    %u = llm.linear %y, %wu {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<128x64xbf16> -> tensor<2x128xbf16>
    // CHECK: [[U:%.*]] = llm.linear [[Y]], [[WU]] {llm.layer = 0 : i64} : tensor<2x64xbf16>, tensor<128x64xbf16> -> tensor<2x128xbf16>
    %act = llm.silu %g {llm.layer = 0 : i64} : tensor<2x128xbf16>
    // CHECK: [[ACT:%.*]] = llm.silu [[G]] {llm.layer = 0 : i64} : tensor<2x128xbf16>
    %gu = llm.mul %act, %u {llm.layer = 0 : i64} : tensor<2x128xbf16>
    // CHECK: [[GU:%.*]] = llm.mul [[ACT]], [[U]] {llm.layer = 0 : i64} : tensor<2x128xbf16>
    %d = llm.linear %gu, %wd {llm.layer = 0 : i64} : tensor<2x128xbf16>, tensor<64x128xbf16> -> tensor<2x64xbf16>
    // CHECK: [[D:%.*]] = llm.linear [[GU]], [[WD]] {llm.layer = 0 : i64} : tensor<2x128xbf16>, tensor<64x128xbf16> -> tensor<2x64xbf16>
    %h2 = llm.add %h1, %d {llm.layer = 0 : i64} : tensor<2x64xbf16>
    // CHECK: [[H2:%.*]] = llm.add [[H1]], [[D]] {llm.layer = 0 : i64} : tensor<2x64xbf16>
    %nw = llm.weight @model.norm.weight : tensor<64xbf16>
    // CHECK: [[NW:%.*]] = llm.weight @model.norm.weight : tensor<64xbf16>
    %hn = llm.rms_norm %h2, %nw {eps = 1.0e-05 : f32} : tensor<2x64xbf16>, tensor<64xbf16>
    // CHECK: [[HN:%.*]] = llm.rms_norm [[H2]], [[NW]] {eps = 1.000000e-05 : f32} : tensor<2x64xbf16>, tensor<64xbf16>
    %lm = llm.weight @lm_head.weight : tensor<128x64xbf16>
    // CHECK: [[LM:%.*]] = llm.weight @lm_head.weight : tensor<128x64xbf16>
    %logits = llm.linear %hn, %lm : tensor<2x64xbf16>, tensor<128x64xbf16> -> tensor<2x128xbf16>
    // CHECK: [[LOGITS:%.*]] = llm.linear [[HN]], [[LM]] : tensor<2x64xbf16>, tensor<128x64xbf16> -> tensor<2x128xbf16>
    %next = llm.argmax %logits : tensor<2x128xbf16> -> tensor<2xi32>
    // CHECK: [[NEXT:%.*]] = llm.argmax [[LOGITS]] : tensor<2x128xbf16> -> tensor<2xi32>
    func.return %next, %k_cache_1, %v_cache_1 : tensor<2xi32>, tensor<2x2x32x16xbf16>, tensor<2x2x32x16xbf16>
    // CHECK: func.return [[NEXT]], [[K_CACHE_1]], [[V_CACHE_1]] : tensor<2xi32>, tensor<2x2x32x16xbf16>, tensor<2x2x32x16xbf16>
  }

  // The other forms: layer_norm, gelu (both), softmax, all_reduce, all_gather, moe (with and without
  // renormalization), linear rope scaling, attention with scale and sliding window, f32 data.
  func.func @other_forms(%x: tensor<1x64xf32>, %w: tensor<64xf32>, %b: tensor<64xf32>, %pos: tensor<1xi32>, %kc: tensor<1x1x8x32xf32>, %vc: tensor<1x1x8x32xf32>, %router: tensor<4x64xf32>, %gate: tensor<4x96x64xf32>, %up: tensor<4x96x64xf32>, %down: tensor<4x64x96xf32>) {
  // CHECK: func.func @other_forms([[X:%.*]]: tensor<1x64xf32>, [[W:%.*]]: tensor<64xf32>, [[B:%.*]]: tensor<64xf32>, [[POS:%.*]]: tensor<1xi32>, [[KC:%.*]]: tensor<1x1x8x32xf32>, [[VC:%.*]]: tensor<1x1x8x32xf32>, [[ROUTER:%.*]]: tensor<4x64xf32>, [[GATE:%.*]]: tensor<4x96x64xf32>, [[UP:%.*]]: tensor<4x96x64xf32>, [[DOWN:%.*]]: tensor<4x64x96xf32>) {
    %ln = llm.layer_norm %x, %w, %b {eps = 1.0e-05 : f32} : tensor<1x64xf32>, tensor<64xf32>, tensor<64xf32>
    // CHECK: [[LN:%.*]] = llm.layer_norm [[X]], [[W]], [[B]] {eps = 1.000000e-05 : f32} : tensor<1x64xf32>, tensor<64xf32>, tensor<64xf32>
    %g0 = llm.gelu %ln : tensor<1x64xf32>
    // CHECK: [[G0:%.*]] = llm.gelu [[LN]] : tensor<1x64xf32>
    %g1 = llm.gelu %g0 {approximate = "tanh"} : tensor<1x64xf32>
    // CHECK: [[G1:%.*]] = llm.gelu [[G0]] {approximate = "tanh"} : tensor<1x64xf32>
    %sm = llm.softmax %g1 : tensor<1x64xf32>
    // CHECK: [[SM:%.*]] = llm.softmax [[G1]] : tensor<1x64xf32>
    %ar = llm.all_reduce %sm {reduction = "sum"} : tensor<1x64xf32>
    // CHECK: [[AR:%.*]] = llm.all_reduce [[SM]] {reduction = "sum"} : tensor<1x64xf32>
    %ag = llm.all_gather %ar {dim = 1 : i64} : tensor<1x64xf32> -> tensor<1x128xf32>
    // CHECK: [[AG:%.*]] = llm.all_gather [[AR]] {dim = 1 : i64} : tensor<1x64xf32> -> tensor<1x128xf32>
    %ag0 = llm.all_gather %ag {dim = 0 : i64} : tensor<1x128xf32> -> tensor<2x128xf32>
    // CHECK: llm.all_gather [[AG]] {dim = 0 : i64} : tensor<1x128xf32> -> tensor<2x128xf32>
    %m0 = llm.moe %ar, %router, %gate, %up, %down {num_experts = 4 : i64, top_k = 2 : i64, normalize_top_k} : tensor<1x64xf32>, tensor<4x64xf32>, tensor<4x96x64xf32>, tensor<4x96x64xf32>, tensor<4x64x96xf32>
    // CHECK: [[M0:%.*]] = llm.moe [[AR]], [[ROUTER]], [[GATE]], [[UP]], [[DOWN]] {num_experts = 4 : i64, top_k = 2 : i64, normalize_top_k} : tensor<1x64xf32>, tensor<4x64xf32>, tensor<4x96x64xf32>, tensor<4x96x64xf32>, tensor<4x64x96xf32>
    %m1 = llm.moe %m0, %router, %gate, %up, %down {num_experts = 4 : i64, top_k = 1 : i64} : tensor<1x64xf32>, tensor<4x64xf32>, tensor<4x96x64xf32>, tensor<4x96x64xf32>, tensor<4x64x96xf32>
    // CHECK: [[M1:%.*]] = llm.moe [[M0]], [[ROUTER]], [[GATE]], [[UP]], [[DOWN]] {num_experts = 4 : i64, top_k = 1 : i64} : tensor<1x64xf32>, tensor<4x64xf32>, tensor<4x96x64xf32>, tensor<4x96x64xf32>, tensor<4x64x96xf32>
    %r = llm.rope %m1, %pos {head_dim = 32 : i64, theta = 1.0e+04 : f32, scaling = #llm.rope_scaling<linear, factor = 4>} : tensor<1x64xf32>, tensor<1xi32>
    // CHECK: [[R:%.*]] = llm.rope [[M1]], [[POS]] {head_dim = 32 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<linear, factor = 4.0>} : tensor<1x64xf32>, tensor<1xi32>
    %r2 = llm.rope %r, %pos {head_dim = 32 : i64, theta = 1.0e+06 : f32} : tensor<1x64xf32>, tensor<1xi32>
    // CHECK: [[R2:%.*]] = llm.rope [[R]], [[POS]] {head_dim = 32 : i64, theta = 1.000000e+06 : f32} : tensor<1x64xf32>, tensor<1xi32>
    %a = llm.attention %r2, %kc, %vc, %pos {num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 32 : i64, scale = 0.125 : f32, sliding_window = 4 : i64} : tensor<1x64xf32>, tensor<1x1x8x32xf32>, tensor<1x1x8x32xf32>, tensor<1xi32>
    // CHECK: [[A:%.*]] = llm.attention [[R2]], [[KC]], [[VC]], [[POS]] {num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 32 : i64, scale = 1.250000e-01 : f32, sliding_window = 4 : i64} : tensor<1x64xf32>, tensor<1x1x8x32xf32>, tensor<1x1x8x32xf32>, tensor<1xi32>
    func.return
    // CHECK: func.return
  }
}
