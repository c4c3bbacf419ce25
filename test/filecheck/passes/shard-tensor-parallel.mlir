// RUN: rdu-opt %s -p 'shard-tensor-parallel{sockets=2}' | filecheck %s --check-prefix=TP2
// RUN: rdu-opt %s -p 'shard-tensor-parallel{sockets=4}' | filecheck %s --check-prefix=TP4
// RUN: rdu-opt %s -p 'shard-tensor-parallel{sockets=4}' --print-op-generic | rdu-opt | filecheck %s --check-prefix=TP4
// RUN: rdu-opt %s -p 'shard-tensor-parallel{sockets=1}' | filecheck %s --check-prefix=ONE
// RUN: rdu-import tiny-llama --layers 2 --context 8 | rdu-opt -p 'outline-kernels,kernel-looping,shard-tensor-parallel{sockets=4}' | filecheck %s --check-prefix=LOOP
// RUN: rdu-import tiny-mixtral --layers 1 --context 8 | rdu-opt -p 'shard-tensor-parallel{sockets=2}' | filecheck %s --check-prefix=MOE
// RUN: rdu-import tiny-qwen2 --layers 1 --context 8 | rdu-opt -p 'outline-kernels,shard-tensor-parallel{sockets=4}' | filecheck %s --check-prefix=HEAD
// RUN: rdu-import tiny-llama --layers 1 | not rdu-opt -p 'shard-tensor-parallel{sockets=8}' 2>&1 | filecheck %s --check-prefix=HEADS
// RUN: rdu-import qwen2.5-7b --layers 1 | not rdu-opt -p 'shard-tensor-parallel{sockets=8}' 2>&1 | filecheck %s --check-prefix=QWEN
// RUN: not rdu-opt %s -p 'shard-tensor-parallel{sockets=3}' 2>&1 | filecheck %s --check-prefix=COUNT
// RUN: rdu-opt %s -p 'shard-tensor-parallel{sockets=2}' | not rdu-opt -p 'shard-tensor-parallel{sockets=4}' 2>&1 | filecheck %s --check-prefix=AGAIN
// RUN: rdu-import tiny-llama --layers 2 --context 8 | rdu-opt -p 'outline-kernels,kernel-looping,shard-tensor-parallel{sockets=4 kv-seq-split=2}' | filecheck %s --check-prefix=DEAL
// RUN: rdu-import tiny-llama --layers 1 | not rdu-opt -p 'shard-tensor-parallel{sockets=4 kv-seq-split=0}' 2>&1 | filecheck %s --check-prefix=DEALBAD

// One decoder layer (hidden 8, 4 query heads and 2 kv heads of dim 2, intermediate 8, vocab
// 16, context 4) with a q bias. Megatron sharding: q/k/v column-split by heads, o_proj
// row-split + all_reduce, gate/up column-split, down row-split + all_reduce; embedding, final
// norm and the LM head (tied to the embedding, so not split by vocab) replicated; the caches
// split by kv head.

builtin.module attributes {llm.model = "toy"} {
  llm.param @embed "model.embed_tokens.weight" : tensor<16x8xbf16>
  llm.param @wq "model.layers.0.self_attn.q_proj.weight" : tensor<8x8xbf16>
  llm.param @bq "model.layers.0.self_attn.q_proj.bias" : tensor<8xbf16>
  llm.param @wk "model.layers.0.self_attn.k_proj.weight" : tensor<4x8xbf16>
  llm.param @wv "model.layers.0.self_attn.v_proj.weight" : tensor<4x8xbf16>
  llm.param @wo "model.layers.0.self_attn.o_proj.weight" : tensor<8x8xbf16>
  llm.param @wg "model.layers.0.mlp.gate_proj.weight" : tensor<8x8xbf16>
  llm.param @wu "model.layers.0.mlp.up_proj.weight" : tensor<8x8xbf16>
  llm.param @wd "model.layers.0.mlp.down_proj.weight" : tensor<8x8xbf16>
  llm.param @norm "model.norm.weight" : tensor<8xbf16>
  func.func @decode_step(%tokens: tensor<1xi32>, %pos: tensor<1xi32>, %kcache: tensor<1x1x2x4x2xbf16>, %vcache: tensor<1x1x2x4x2xbf16>) -> (tensor<1x16xbf16>, tensor<1xi32>, tensor<1x1x2x4x2xbf16>, tensor<1x1x2x4x2xbf16>) {
    %table = llm.weight @embed : tensor<16x8xbf16>
    %h = llm.embedding %table, %tokens : tensor<16x8xbf16>, tensor<1xi32> -> tensor<1x8xbf16>
    %kc = dfk.slice %kcache[0] : tensor<1x1x2x4x2xbf16> -> tensor<1x2x4x2xbf16>
    %vc = dfk.slice %vcache[0] : tensor<1x1x2x4x2xbf16> -> tensor<1x2x4x2xbf16>
    %wq = llm.weight @wq {llm.layer = 0 : i64} : tensor<8x8xbf16>
    %bq = llm.weight @bq {llm.layer = 0 : i64} : tensor<8xbf16>
    %q = llm.linear %h, %wq, %bq {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8x8xbf16>, tensor<8xbf16> -> tensor<1x8xbf16>
    %wk = llm.weight @wk {llm.layer = 0 : i64} : tensor<4x8xbf16>
    %k = llm.linear %h, %wk {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<4x8xbf16> -> tensor<1x4xbf16>
    %wv = llm.weight @wv {llm.layer = 0 : i64} : tensor<4x8xbf16>
    %v = llm.linear %h, %wv {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<4x8xbf16> -> tensor<1x4xbf16>
    %qr = llm.rope %q, %pos {head_dim = 2 : i64, theta = 10000.0 : f32, llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<1xi32>
    %kr = llm.rope %k, %pos {head_dim = 2 : i64, theta = 10000.0 : f32, llm.layer = 0 : i64} : tensor<1x4xbf16>, tensor<1xi32>
    %kc1 = llm.kv_cache_write %kc, %kr, %pos {llm.layer = 0 : i64} : tensor<1x2x4x2xbf16>, tensor<1x4xbf16>, tensor<1xi32>
    %vc1 = llm.kv_cache_write %vc, %v, %pos {llm.layer = 0 : i64} : tensor<1x2x4x2xbf16>, tensor<1x4xbf16>, tensor<1xi32>
    %a = llm.attention %qr, %kc1, %vc1, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 2 : i64, llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<1x2x4x2xbf16>, tensor<1x2x4x2xbf16>, tensor<1xi32>
    %wo = llm.weight @wo {llm.layer = 0 : i64} : tensor<8x8xbf16>
    %o = llm.linear %a, %wo {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %h1 = llm.add %h, %o {llm.layer = 0 : i64} : tensor<1x8xbf16>
    %wg = llm.weight @wg {llm.layer = 0 : i64} : tensor<8x8xbf16>
    %g = llm.linear %h1, %wg {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %wu = llm.weight @wu {llm.layer = 0 : i64} : tensor<8x8xbf16>
    %u = llm.linear %h1, %wu {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %s = llm.silu %g {llm.layer = 0 : i64} : tensor<1x8xbf16>
    %gu = llm.mul %s, %u {llm.layer = 0 : i64} : tensor<1x8xbf16>
    %wd = llm.weight @wd {llm.layer = 0 : i64} : tensor<8x8xbf16>
    %d = llm.linear %gu, %wd {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %h2 = llm.add %h1, %d {llm.layer = 0 : i64} : tensor<1x8xbf16>
    %nw = llm.weight @norm : tensor<8xbf16>
    %hn = llm.rms_norm %h2, %nw {eps = 1.0e-05 : f32} : tensor<1x8xbf16>, tensor<8xbf16>
    %t2 = llm.weight @embed : tensor<16x8xbf16>
    %logits = llm.linear %hn, %t2 : tensor<1x8xbf16>, tensor<16x8xbf16> -> tensor<1x16xbf16>
    %next = llm.argmax %logits : tensor<1x16xbf16> -> tensor<1xi32>
    %ko = dfk.stack %kc1 : tensor<1x2x4x2xbf16> -> tensor<1x1x2x4x2xbf16>
    %vo = dfk.stack %vc1 : tensor<1x2x4x2xbf16> -> tensor<1x1x2x4x2xbf16>
    func.return %logits, %next, %ko, %vo : tensor<1x16xbf16>, tensor<1xi32>, tensor<1x1x2x4x2xbf16>, tensor<1x1x2x4x2xbf16>
  }
}

// TP2:      builtin.module attributes {llm.model = "toy", llm.sockets = 2 : i64} {
// TP2-NEXT:   llm.param @embed "model.embed_tokens.weight" : tensor<16x8xbf16>
// TP2-NEXT:   llm.param @embed.lm_head "model.embed_tokens.weight" shard #llm.shard<dim = 0, parts = 2> : tensor<8x8xbf16>
// TP2-NEXT:   llm.param @wq "model.layers.0.self_attn.q_proj.weight" shard #llm.shard<dim = 0, parts = 2> : tensor<4x8xbf16>
// TP2-NEXT:   llm.param @bq "model.layers.0.self_attn.q_proj.bias" shard #llm.shard<dim = 0, parts = 2> : tensor<4xbf16>
// TP2-NEXT:   llm.param @wk "model.layers.0.self_attn.k_proj.weight" shard #llm.shard<dim = 0, parts = 2> : tensor<2x8xbf16>
// TP2-NEXT:   llm.param @wv "model.layers.0.self_attn.v_proj.weight" shard #llm.shard<dim = 0, parts = 2> : tensor<2x8xbf16>
// TP2-NEXT:   llm.param @wo "model.layers.0.self_attn.o_proj.weight" shard #llm.shard<dim = 1, parts = 2> : tensor<8x4xbf16>
// TP2-NEXT:   llm.param @wg "model.layers.0.mlp.gate_proj.weight" shard #llm.shard<dim = 0, parts = 2> : tensor<4x8xbf16>
// TP2-NEXT:   llm.param @wu "model.layers.0.mlp.up_proj.weight" shard #llm.shard<dim = 0, parts = 2> : tensor<4x8xbf16>
// TP2-NEXT:   llm.param @wd "model.layers.0.mlp.down_proj.weight" shard #llm.shard<dim = 1, parts = 2> : tensor<8x4xbf16>
// TP2-NEXT:   llm.param @norm "model.norm.weight" : tensor<8xbf16>
// TP2-NEXT:   func.func @decode_step(%tokens: tensor<1xi32>, %pos: tensor<1xi32>, %kcache: tensor<1x1x1x4x2xbf16> {llm.shard = #llm.shard<dim = 2, parts = 2>}, %vcache: tensor<1x1x1x4x2xbf16> {llm.shard = #llm.shard<dim = 2, parts = 2>}) -> (tensor<1x16xbf16>, tensor<1xi32>, tensor<1x1x1x4x2xbf16> {llm.shard = #llm.shard<dim = 2, parts = 2>}, tensor<1x1x1x4x2xbf16> {llm.shard = #llm.shard<dim = 2, parts = 2>}) {
// TP2:          %h = llm.embedding %table, %tokens : tensor<16x8xbf16>, tensor<1xi32> -> tensor<1x8xbf16>
// TP2:          %q = llm.linear %h, %wq, %bq {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<4x8xbf16>, tensor<4xbf16> -> tensor<1x4xbf16>
// TP2:          %k = llm.linear %h, %wk {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<2x8xbf16> -> tensor<1x2xbf16>
// TP2:          %kc1 = llm.kv_cache_write %kc, %kr, %pos {llm.layer = 0 : i64} : tensor<1x1x4x2xbf16>, tensor<1x2xbf16>, tensor<1xi32>
// TP2:          %a = llm.attention %qr, %kc1, %vc1, %pos {llm.layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 2 : i64} : tensor<1x4xbf16>, tensor<1x1x4x2xbf16>, tensor<1x1x4x2xbf16>, tensor<1xi32>
// TP2:          %o = llm.linear %a, %wo {llm.layer = 0 : i64} : tensor<1x4xbf16>, tensor<8x4xbf16> -> tensor<1x8xbf16>
// TP2-NEXT:     %o_1 = llm.all_reduce %o {llm.layer = 0 : i64, reduction = "sum"} : tensor<1x8xbf16>
// TP2-NEXT:     %h1 = llm.add %h, %o_1 {llm.layer = 0 : i64} : tensor<1x8xbf16>
// TP2:          %s = llm.silu %g {llm.layer = 0 : i64} : tensor<1x4xbf16>
// TP2:          %d = llm.linear %gu, %wd {llm.layer = 0 : i64} : tensor<1x4xbf16>, tensor<8x4xbf16> -> tensor<1x8xbf16>
// TP2-NEXT:     %d_1 = llm.all_reduce %d {llm.layer = 0 : i64, reduction = "sum"} : tensor<1x8xbf16>
// TP2-NEXT:     %h2 = llm.add %h1, %d_1 {llm.layer = 0 : i64} : tensor<1x8xbf16>
// The tied LM head reads the table through a parameter of its own, split by vocab.
// TP2:          %t2 = llm.weight @embed.lm_head : tensor<8x8xbf16>
// TP2-NEXT:     %logits = llm.linear %hn, %t2 : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
// TP2-NEXT:     %logits_1 = llm.all_gather %logits {dim = 1 : i64} : tensor<1x8xbf16> -> tensor<1x16xbf16>
// TP2-NEXT:     %next = llm.argmax %logits_1 : tensor<1x16xbf16> -> tensor<1xi32>
// TP2:          %ko = dfk.stack %kc1 : tensor<1x1x4x2xbf16> -> tensor<1x1x1x4x2xbf16>
// TP2-NOT:      llm.all_reduce
// TP2-NOT:      llm.all_gather

// 4 sockets, 2 kv heads: each rank holds one query head and the kv head of its group, every kv
// head on 2 ranks (parts = 2 < 4 sockets marks the replication).
// TP4:      llm.sockets = 4 : i64
// TP4:      llm.param @wq "model.layers.0.self_attn.q_proj.weight" shard #llm.shard<dim = 0, parts = 4> : tensor<2x8xbf16>
// TP4:      llm.param @wk "model.layers.0.self_attn.k_proj.weight" shard #llm.shard<dim = 0, parts = 2> : tensor<2x8xbf16>
// TP4-NEXT: llm.param @wv "model.layers.0.self_attn.v_proj.weight" shard #llm.shard<dim = 0, parts = 2> : tensor<2x8xbf16>
// TP4-NEXT: llm.param @wo "model.layers.0.self_attn.o_proj.weight" shard #llm.shard<dim = 1, parts = 4> : tensor<8x2xbf16>
// TP4:      %kcache: tensor<1x1x1x4x2xbf16> {llm.shard = #llm.shard<dim = 2, parts = 2>}
// TP4:      llm.attention {{.*}} {llm.layer = 0 : i64, num_heads = 1 : i64, num_kv_heads = 1 : i64, head_dim = 2 : i64} : tensor<1x2xbf16>, tensor<1x1x4x2xbf16>, tensor<1x1x4x2xbf16>, tensor<1xi32>
// TP4-COUNT-2: llm.all_reduce

// ONE:     builtin.module attributes {llm.model = "toy", llm.sockets = 1 : i64} {
// ONE-NOT: shard
// ONE-NOT: llm.all_reduce

// After outlining and kernel looping: the stacked parameters keep their shard (dim counts in
// each checkpoint tensor), and the looped kernel's signature, the loop's stacked operands and
// body, and the call are retyped together.
// LOOP:      llm.sockets = 4 : i64
// LOOP:      llm.param @model.layers.0_to_1.self_attn.q_proj.weight stacked ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"] shard #llm.shard<dim = 0, parts = 4> : tensor<2x16x64xbf16>
// LOOP-NEXT: llm.param @model.layers.0_to_1.self_attn.k_proj.weight stacked ["model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.k_proj.weight"] shard #llm.shard<dim = 0, parts = 2> : tensor<2x16x64xbf16>
// LOOP:      dfk.kernel @decoder_layer.looped(%h: tensor<1x64xbf16>, %input_layernorm: tensor<2x64xbf16>, %q_proj: tensor<2x16x64xbf16>, %k_proj: tensor<2x16x64xbf16>, %v_proj: tensor<2x16x64xbf16>, %positions: tensor<1xi32>, %kc: tensor<2x1x1x8x16xbf16>, %vc: tensor<2x1x1x8x16xbf16>, %o_proj: tensor<2x64x16xbf16>,
// LOOP-NEXT:   dfk.loop {{.*}} stacked(%input_layernorm_1 = %input_layernorm : tensor<2x64xbf16>, %q_proj_1 = %q_proj : tensor<2x16x64xbf16>, %k_proj_1 = %k_proj : tensor<2x16x64xbf16>, %v_proj_1 = %v_proj : tensor<2x16x64xbf16>, %kc_1 = %kc : tensor<2x1x1x8x16xbf16>
// LOOP:          llm.attention {{.*}} {num_heads = 1 : i64, num_kv_heads = 1 : i64, head_dim = 16 : i64}
// LOOP:          %o = llm.linear %attn, %o_proj_1 : tensor<1x16xbf16>, tensor<64x16xbf16> -> tensor<1x64xbf16>
// LOOP-NEXT:     llm.all_reduce %o {reduction = "sum"} : tensor<1x64xbf16>
// LOOP:          llm.all_reduce %d {reduction = "sum"} : tensor<1x64xbf16>
// LOOP:          dfk.yield carried(%h_3 : tensor<1x64xbf16>) stacked(%kc_2, %vc_2 : tensor<1x1x8x16xbf16>, tensor<1x1x8x16xbf16>)
// LOOP-NEXT:   } -> (tensor<1x64xbf16>, tensor<2x1x1x8x16xbf16>, tensor<2x1x1x8x16xbf16>)
// LOOP:      func.func @decode_step({{.*}} %k_cache: tensor<2x1x1x8x16xbf16> {llm.shard = #llm.shard<dim = 2, parts = 2>}
// LOOP:        dfk.call @decoder_layer.looped({{.*}}) : (tensor<1x64xbf16>, tensor<2x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<2x16x64xbf16>, tensor<1xi32>, tensor<2x1x1x8x16xbf16>, tensor<2x1x1x8x16xbf16>, tensor<2x64x16xbf16>,

// MoE: each expert's intermediate dim is split (gate/up rows, down columns), the router is
// replicated, the layer's output all-reduced.
// MOE:      llm.param @model.layers.0.block_sparse_moe.gate.weight "model.layers.0.block_sparse_moe.gate.weight" : tensor<4x64xbf16>
// MOE-NEXT: llm.param @model.layers.0.block_sparse_moe.experts.w1 stacked [{{.*}}] shard #llm.shard<dim = 0, parts = 2> : tensor<4x64x64xbf16>
// MOE-NEXT: llm.param @model.layers.0.block_sparse_moe.experts.w3 stacked [{{.*}}] shard #llm.shard<dim = 0, parts = 2> : tensor<4x64x64xbf16>
// MOE-NEXT: llm.param @model.layers.0.block_sparse_moe.experts.w2 stacked [{{.*}}] shard #llm.shard<dim = 1, parts = 2> : tensor<4x64x64xbf16>
// MOE:      %moe = llm.moe %y, %gate, %w1, %w3, %w2 {{.*}} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x64x64xbf16>, tensor<4x64x64xbf16>, tensor<4x64x64xbf16>
// MOE-NEXT: %moe_1 = llm.all_reduce %moe {llm.layer = 0 : i64, reduction = "sum"} : tensor<1x64xbf16>
// MOE-NEXT: llm.add %h_1, %moe_1

// An untied LM head is split by vocab rows: each rank computes 256 / 4 logits, gathered
// (in rank order, along the vocab) before the argmax and the kernel's return.
// HEAD:      llm.param @lm_head.weight "lm_head.weight" shard #llm.shard<dim = 0, parts = 4> : tensor<64x64xbf16>
// HEAD:      dfk.kernel @lm_head(%h: tensor<1x64xbf16>, %norm: tensor<64xbf16>, %lm_head: tensor<64x64xbf16>) -> (tensor<1x256xbf16>, tensor<1xi32>) {
// HEAD:        %logits = llm.linear %hn, %lm_head : tensor<1x64xbf16>, tensor<64x64xbf16> -> tensor<1x64xbf16>
// HEAD-NEXT:   %logits_1 = llm.all_gather %logits {dim = 1 : i64} : tensor<1x64xbf16> -> tensor<1x256xbf16>
// HEAD-NEXT:   %next = llm.argmax %logits_1 : tensor<1x256xbf16> -> tensor<1xi32>
// HEAD-NEXT:   dfk.return %logits_1, %next : tensor<1x256xbf16>, tensor<1xi32>
// HEAD:      func.func @decode_step({{.*}}) -> (tensor<1x256xbf16>, tensor<1xi32>,

// HEADS: error: pass 'shard-tensor-parallel' failed: tiny-llama (4 attention heads, 2 kv heads) cannot be split over 8 sockets: the 4 query heads are not a multiple of 8 (supported: 1, 2, 4 sockets)
// QWEN:  error: pass 'shard-tensor-parallel' failed: qwen2.5-7b (28 attention heads, 4 kv heads) cannot be split over 8 sockets: the 28 query heads are not a multiple of 8 (supported: 1, 2, 4 sockets)
// COUNT: error: pass 'shard-tensor-parallel' failed: sockets=3 is not supported (one of 1, 2, 4, 8, 16)
// AGAIN: error: pass 'shard-tensor-parallel' failed: the module is already sharded over 2 sockets (llm.sockets); shard the unsharded module over 4 instead

// KV heads fewer than sockets, caches dealt along the sequence (kv-seq-split=2): 2 kv heads on
// 4 sockets, each kv head's 8 positions dealt over the 2 sockets sharing it (4 rows each,
// every other position); the write and the attention say so (`context_shards`).
// DEAL:      dfk.kernel @decoder_layer.looped({{.*}} %kc: tensor<2x1x1x4x16xbf16>, %vc: tensor<2x1x1x4x16xbf16>
// DEAL:        llm.kv_cache_write {{.*}} {context_shards = 2 : i64} : tensor<1x1x4x16xbf16>, tensor<1x16xbf16>, tensor<1xi32>
// DEAL:        llm.attention {{.*}} {num_heads = 1 : i64, num_kv_heads = 1 : i64, head_dim = 16 : i64, context_shards = 2 : i64}
// DEAL:      func.func @decode_step({{.*}} %k_cache: tensor<2x1x1x4x16xbf16> {llm.shard = #llm.shard<dim = 2, parts = 2, interleave_dim = 3, interleave = 2>}
// DEALBAD: error: pass 'shard-tensor-parallel' failed: kv-seq-split must be >= 1 (or -1: from the cost model), got 0
