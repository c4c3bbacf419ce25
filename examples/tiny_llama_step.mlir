builtin.module attributes {llm.model = "tiny-llama"} {
  llm.param @model.embed_tokens.weight "model.embed_tokens.weight" : tensor<256x64xbf16>
  llm.param @model.layers.0.input_layernorm.weight "model.layers.0.input_layernorm.weight" : tensor<64xbf16>
  llm.param @model.layers.0.self_attn.q_proj.weight "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16>
  llm.param @model.layers.0.self_attn.k_proj.weight "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xbf16>
  llm.param @model.layers.0.self_attn.v_proj.weight "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xbf16>
  llm.param @model.layers.0.self_attn.o_proj.weight "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xbf16>
  llm.param @model.layers.0.post_attention_layernorm.weight "model.layers.0.post_attention_layernorm.weight" : tensor<64xbf16>
  llm.param @model.layers.0.mlp.gate_proj.weight "model.layers.0.mlp.gate_proj.weight" : tensor<128x64xbf16>
  llm.param @model.layers.0.mlp.up_proj.weight "model.layers.0.mlp.up_proj.weight" : tensor<128x64xbf16>
  llm.param @model.layers.0.mlp.down_proj.weight "model.layers.0.mlp.down_proj.weight" : tensor<64x128xbf16>
  llm.param @model.layers.1.input_layernorm.weight "model.layers.1.input_layernorm.weight" : tensor<64xbf16>
  llm.param @model.layers.1.self_attn.q_proj.weight "model.layers.1.self_attn.q_proj.weight" : tensor<64x64xbf16>
  llm.param @model.layers.1.self_attn.k_proj.weight "model.layers.1.self_attn.k_proj.weight" : tensor<32x64xbf16>
  llm.param @model.layers.1.self_attn.v_proj.weight "model.layers.1.self_attn.v_proj.weight" : tensor<32x64xbf16>
  llm.param @model.layers.1.self_attn.o_proj.weight "model.layers.1.self_attn.o_proj.weight" : tensor<64x64xbf16>
  llm.param @model.layers.1.post_attention_layernorm.weight "model.layers.1.post_attention_layernorm.weight" : tensor<64xbf16>
  llm.param @model.layers.1.mlp.gate_proj.weight "model.layers.1.mlp.gate_proj.weight" : tensor<128x64xbf16>
  llm.param @model.layers.1.mlp.up_proj.weight "model.layers.1.mlp.up_proj.weight" : tensor<128x64xbf16>
  llm.param @model.layers.1.mlp.down_proj.weight "model.layers.1.mlp.down_proj.weight" : tensor<64x128xbf16>
  llm.param @model.norm.weight "model.norm.weight" : tensor<64xbf16>
  func.func @decode_step(%tokens: tensor<1xi32>, %positions: tensor<1xi32>, %k_cache: tensor<2x1x2x16x16xbf16>, %v_cache: tensor<2x1x2x16x16xbf16>) -> (tensor<1x256xbf16>, tensor<1xi32>, tensor<2x1x2x16x16xbf16>, tensor<2x1x2x16x16xbf16>) {
    %embed_tokens = llm.weight @model.embed_tokens.weight : tensor<256x64xbf16>
    %h = llm.embedding %embed_tokens, %tokens : tensor<256x64xbf16>, tensor<1xi32> -> tensor<1x64xbf16>
    %kc = dfk.slice %k_cache[0] : tensor<2x1x2x16x16xbf16> -> tensor<1x2x16x16xbf16>
    %vc = dfk.slice %v_cache[0] : tensor<2x1x2x16x16xbf16> -> tensor<1x2x16x16xbf16>
    %input_layernorm = llm.weight @model.layers.0.input_layernorm.weight {llm.layer = 0 : i64} : tensor<64xbf16>
    %x = llm.rms_norm %h, %input_layernorm {llm.layer = 0 : i64, eps = 1.000000e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
    %q_proj = llm.weight @model.layers.0.self_attn.q_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
    %q = llm.linear %x, %q_proj {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<64x64xbf16> -> tensor<1x64xbf16>
    %k_proj = llm.weight @model.layers.0.self_attn.k_proj.weight {llm.layer = 0 : i64} : tensor<32x64xbf16>
    %k = llm.linear %x, %k_proj {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<32x64xbf16> -> tensor<1x32xbf16>
    %v_proj = llm.weight @model.layers.0.self_attn.v_proj.weight {llm.layer = 0 : i64} : tensor<32x64xbf16>
    %v = llm.linear %x, %v_proj {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<32x64xbf16> -> tensor<1x32xbf16>
    %q_1 = llm.rope %q, %positions {llm.layer = 0 : i64, head_dim = 16 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<llama3, factor = 4.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 32>} : tensor<1x64xbf16>, tensor<1xi32>
    %k_1 = llm.rope %k, %positions {llm.layer = 0 : i64, head_dim = 16 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<llama3, factor = 4.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 32>} : tensor<1x32xbf16>, tensor<1xi32>
    %kc_1 = llm.kv_cache_write %kc, %k_1, %positions {llm.layer = 0 : i64} : tensor<1x2x16x16xbf16>, tensor<1x32xbf16>, tensor<1xi32>
    %vc_1 = llm.kv_cache_write %vc, %v, %positions {llm.layer = 0 : i64} : tensor<1x2x16x16xbf16>, tensor<1x32xbf16>, tensor<1xi32>
    %attn = llm.attention %q_1, %kc_1, %vc_1, %positions {llm.layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1x2x16x16xbf16>, tensor<1xi32>
    %o_proj = llm.weight @model.layers.0.self_attn.o_proj.weight {llm.layer = 0 : i64} : tensor<64x64xbf16>
    %o = llm.linear %attn, %o_proj {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<64x64xbf16> -> tensor<1x64xbf16>
    %h_1 = llm.add %h, %o {llm.layer = 0 : i64} : tensor<1x64xbf16>
    %post_attention_layernorm = llm.weight @model.layers.0.post_attention_layernorm.weight {llm.layer = 0 : i64} : tensor<64xbf16>
    %y = llm.rms_norm %h_1, %post_attention_layernorm {llm.layer = 0 : i64, eps = 1.000000e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
    %gate_proj = llm.weight @model.layers.0.mlp.gate_proj.weight {llm.layer = 0 : i64} : tensor<128x64xbf16>
    %g = llm.linear %y, %gate_proj {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<128x64xbf16> -> tensor<1x128xbf16>
    %up_proj = llm.weight @model.layers.0.mlp.up_proj.weight {llm.layer = 0 : i64} : tensor<128x64xbf16>
    %u = llm.linear %y, %up_proj {llm.layer = 0 : i64} : tensor<1x64xbf16>, tensor<128x64xbf16> -> tensor<1x128xbf16>
    %g_1 = llm.silu %g {llm.layer = 0 : i64} : tensor<1x128xbf16>
    %gu = llm.mul %g_1, %u {llm.layer = 0 : i64} : tensor<1x128xbf16>
    %down_proj = llm.weight @model.layers.0.mlp.down_proj.weight {llm.layer = 0 : i64} : tensor<64x128xbf16>
    %d = llm.linear %gu, %down_proj {llm.layer = 0 : i64} : tensor<1x128xbf16>, tensor<64x128xbf16> -> tensor<1x64xbf16>
    %h_2 = llm.add %h_1, %d {llm.layer = 0 : i64} : tensor<1x64xbf16>
    %kc_2 = dfk.slice %k_cache[1] : tensor<2x1x2x16x16xbf16> -> tensor<1x2x16x16xbf16>
    %vc_2 = dfk.slice %v_cache[1] : tensor<2x1x2x16x16xbf16> -> tensor<1x2x16x16xbf16>
    %input_layernorm_1 = llm.weight @model.layers.1.input_layernorm.weight {llm.layer = 1 : i64} : tensor<64xbf16>
    %x_1 = llm.rms_norm %h_2, %input_layernorm_1 {llm.layer = 1 : i64, eps = 1.000000e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
    %q_proj_1 = llm.weight @model.layers.1.self_attn.q_proj.weight {llm.layer = 1 : i64} : tensor<64x64xbf16>
    %q_2 = llm.linear %x_1, %q_proj_1 {llm.layer = 1 : i64} : tensor<1x64xbf16>, tensor<64x64xbf16> -> tensor<1x64xbf16>
    %k_proj_1 = llm.weight @model.layers.1.self_attn.k_proj.weight {llm.layer = 1 : i64} : tensor<32x64xbf16>
    %k_2 = llm.linear %x_1, %k_proj_1 {llm.layer = 1 : i64} : tensor<1x64xbf16>, tensor<32x64xbf16> -> tensor<1x32xbf16>
    %v_proj_1 = llm.weight @model.layers.1.self_attn.v_proj.weight {llm.layer = 1 : i64} : tensor<32x64xbf16>
    %v_1 = llm.linear %x_1, %v_proj_1 {llm.layer = 1 : i64} : tensor<1x64xbf16>, tensor<32x64xbf16> -> tensor<1x32xbf16>
    %q_3 = llm.rope %q_2, %positions {llm.layer = 1 : i64, head_dim = 16 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<llama3, factor = 4.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 32>} : tensor<1x64xbf16>, tensor<1xi32>
    %k_3 = llm.rope %k_2, %positions {llm.layer = 1 : i64, head_dim = 16 : i64, theta = 1.000000e+04 : f32, scaling = #llm.rope_scaling<llama3, factor = 4.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 32>} : tensor<1x32xbf16>, tensor<1xi32>
    %kc_3 = llm.kv_cache_write %kc_2, %k_3, %positions {llm.layer = 1 : i64} : tensor<1x2x16x16xbf16>, tensor<1x32xbf16>, tensor<1xi32>
    %vc_3 = llm.kv_cache_write %vc_2, %v_1, %positions {llm.layer = 1 : i64} : tensor<1x2x16x16xbf16>, tensor<1x32xbf16>, tensor<1xi32>
    %attn_1 = llm.attention %q_3, %kc_3, %vc_3, %positions {llm.layer = 1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1x2x16x16xbf16>, tensor<1xi32>
    %o_proj_1 = llm.weight @model.layers.1.self_attn.o_proj.weight {llm.layer = 1 : i64} : tensor<64x64xbf16>
    %o_1 = llm.linear %attn_1, %o_proj_1 {llm.layer = 1 : i64} : tensor<1x64xbf16>, tensor<64x64xbf16> -> tensor<1x64xbf16>
    %h_3 = llm.add %h_2, %o_1 {llm.layer = 1 : i64} : tensor<1x64xbf16>
    %post_attention_layernorm_1 = llm.weight @model.layers.1.post_attention_layernorm.weight {llm.layer = 1 : i64} : tensor<64xbf16>
    %y_1 = llm.rms_norm %h_3, %post_attention_layernorm_1 {llm.layer = 1 : i64, eps = 1.000000e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
    %gate_proj_1 = llm.weight @model.layers.1.mlp.gate_proj.weight {llm.layer = 1 : i64} : tensor<128x64xbf16>
    %g_2 = llm.linear %y_1, %gate_proj_1 {llm.layer = 1 : i64} : tensor<1x64xbf16>, tensor<128x64xbf16> -> tensor<1x128xbf16>
    %up_proj_1 = llm.weight @model.layers.1.mlp.up_proj.weight {llm.layer = 1 : i64} : tensor<128x64xbf16>
    %u_1 = llm.linear %y_1, %up_proj_1 {llm.layer = 1 : i64} : tensor<1x64xbf16>, tensor<128x64xbf16> -> tensor<1x128xbf16>
    %g_3 = llm.silu %g_2 {llm.layer = 1 : i64} : tensor<1x128xbf16>
    %gu_1 = llm.mul %g_3, %u_1 {llm.layer = 1 : i64} : tensor<1x128xbf16>
    %down_proj_1 = llm.weight @model.layers.1.mlp.down_proj.weight {llm.layer = 1 : i64} : tensor<64x128xbf16>
    %d_1 = llm.linear %gu_1, %down_proj_1 {llm.layer = 1 : i64} : tensor<1x128xbf16>, tensor<64x128xbf16> -> tensor<1x64xbf16>
    %h_4 = llm.add %h_3, %d_1 {llm.layer = 1 : i64} : tensor<1x64xbf16>
    %norm = llm.weight @model.norm.weight : tensor<64xbf16>
    %hn = llm.rms_norm %h_4, %norm {eps = 1.000000e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
    %embed_tokens_1 = llm.weight @model.embed_tokens.weight : tensor<256x64xbf16>
    %logits = llm.linear %hn, %embed_tokens_1 : tensor<1x64xbf16>, tensor<256x64xbf16> -> tensor<1x256xbf16>
    %next = llm.argmax %logits : tensor<1x256xbf16> -> tensor<1xi32>
    %k_cache_out = dfk.stack %kc_1, %kc_3 : tensor<1x2x16x16xbf16> -> tensor<2x1x2x16x16xbf16>
    %v_cache_out = dfk.stack %vc_1, %vc_3 : tensor<1x2x16x16xbf16> -> tensor<2x1x2x16x16xbf16>
    func.return %logits, %next, %k_cache_out, %v_cache_out : tensor<1x256xbf16>, tensor<1xi32>, tensor<2x1x2x16x16xbf16>, tensor<2x1x2x16x16xbf16>
  }
}
