// RUN: rdu-opt %s --split-input-file --verify-diagnostics | filecheck %s

// Shared shape / dtype checks.

%x = "test.op"() : () -> tensor<?x64xbf16>
%y = llm.silu %x : tensor<?x64xbf16>
// CHECK: llm.silu: input must have a static shape, got tensor<?x64xbf16>

// -----

%x, %w = "test.op"() : () -> (tensor<64xbf16>, tensor<32x64xbf16>)
%y = llm.linear %x, %w : tensor<64xbf16>, tensor<32x64xbf16> -> tensor<1x32xbf16>
// CHECK: llm.linear: input must be a rank-2 tensor, got tensor<64xbf16>

// -----

%x = "test.op"() : () -> tensor<bf16>
%y = llm.softmax %x : tensor<bf16>
// CHECK: llm.softmax: input must not be a 0-d tensor, got tensor<bf16>

// -----

%a = "test.op"() : () -> tensor<1x64xi8>
%y = llm.add %a, %a : tensor<1x64xi8>
// CHECK: llm.add: lhs must have bf16 or f32 elements, got tensor<1x64xi8>

// -----

%t, %ids = "test.op"() : () -> (tensor<128x64xbf16>, tensor<2xi64>)
%y = llm.embedding %t, %ids : tensor<128x64xbf16>, tensor<2xi64> -> tensor<2x64xbf16>
// CHECK: llm.embedding: ids must be a static tensor<Bxi32>, got tensor<2xi64>

// -----

%x, %w = "test.op"() : () -> (tensor<1x64xbf16>, tensor<32x64xf32>)
%y = llm.linear %x, %w : tensor<1x64xbf16>, tensor<32x64xf32> -> tensor<1x32xbf16>
// CHECK: llm.linear: element types differ: input has bf16, weight has f32

// -----

%t, %ids = "test.op"() : () -> (tensor<128x64xbf16>, tensor<2xi32>)
%y = llm.embedding %t, %ids : tensor<128x64xbf16>, tensor<2xi32> -> tensor<2x32xbf16>
// CHECK: llm.embedding: result must be tensor<2x64xbf16>, got tensor<2x32xbf16>

// -----

%x, %pos = "test.op"() : () -> (tensor<1x64xbf16>, tensor<2xi32>)
%y = llm.rope %x, %pos {head_dim = 16 : i64, theta = 1.0e+04 : f32} : tensor<1x64xbf16>, tensor<2xi32>
// CHECK: llm.rope: positions has 2 entries but input has batch 1

// -----

%x, %w = "test.op"() : () -> (tensor<1x64xbf16>, tensor<64xbf16>)
%y = llm.rms_norm %x, %w {eps = 0.0 : f32} : tensor<1x64xbf16>, tensor<64xbf16>
// CHECK: llm.rms_norm: eps must be positive, got 0.0

// -----

%x = "test.op"() : () -> tensor<1x64xbf16>
%y = llm.silu %x {llm.layer = "3"} : tensor<1x64xbf16>
// CHECK: llm.silu: llm.layer must be a non-negative i64 integer, got "3"

// -----

// llm.param

builtin.module {
  llm.param @p "a" : tensor<?x64xbf16>
}
// CHECK: llm.param: @p type must have a static shape, got tensor<?x64xbf16>

// -----

builtin.module {
  llm.param @p "" : tensor<4xbf16>
}
// CHECK: llm.param @p: empty checkpoint name

// -----

builtin.module {
  llm.param @p stacked ["a", 1] : tensor<2x4xbf16>
}
// CHECK: llm.param @p: sources must be strings, got 1 : i64

// -----

builtin.module {
  llm.param @p stacked [["a"], ["b"]] : tensor<2xbf16>
}
// CHECK: llm.param @p: stacked sources nest deeper than the rank 1 of tensor<2xbf16>

// -----

builtin.module {
  llm.param @p stacked ["a", "b", "c"] : tensor<2x64x64xbf16>
}
// CHECK: llm.param @p: stacked sources list 3 slices at nesting level 0 but dim 0 of tensor<2x64x64xbf16> is 2

// -----

builtin.module {
  llm.param @p stacked [["a", "b"], "c"] : tensor<2x2x64xbf16>
}
// CHECK: llm.param @p: stacked sources are nested unevenly

// -----

func.func @f() {
  llm.param @p "a" : tensor<4xbf16>
  func.return
}
// CHECK: 'llm.param' expects parent op 'builtin.module'

// -----

// llm.weight

builtin.module {
  %w = llm.weight @missing : tensor<4xbf16>
}
// CHECK: llm.weight: no symbol named @missing

// -----

builtin.module {
  func.func @f() {
    func.return
  }
  %w = llm.weight @f : tensor<4xbf16>
}
// CHECK: llm.weight: @f is a func.func, not an llm.param

// -----

builtin.module {
  llm.param @p "p" : tensor<4xbf16>
  %w = llm.weight @p : tensor<4xf32>
}
// CHECK: llm.weight: @p has type tensor<4xbf16> but the read expects tensor<4xf32>

// -----

// Norms

%x, %w = "test.op"() : () -> (tensor<1x64xbf16>, tensor<48xbf16>)
%y = llm.rms_norm %x, %w {eps = 1.0e-05 : f32} : tensor<1x64xbf16>, tensor<48xbf16>
// CHECK: llm.rms_norm: weight has 48 elements, which does not divide the input's 64 features

// -----

%x, %w, %b = "test.op"() : () -> (tensor<1x64xbf16>, tensor<64xbf16>, tensor<32xbf16>)
%y = llm.layer_norm %x, %w, %b {eps = 1.0e-05 : f32} : tensor<1x64xbf16>, tensor<64xbf16>, tensor<32xbf16>
// CHECK: llm.layer_norm: bias must be [64] ([input features]), got tensor<32xbf16>

// -----

// llm.linear

%x, %w = "test.op"() : () -> (tensor<1x64xbf16>, tensor<128x32xbf16>)
%y = llm.linear %x, %w : tensor<1x64xbf16>, tensor<128x32xbf16> -> tensor<1x128xbf16>
// CHECK: llm.linear: input has 64 features but weight [128, 32] expects 32

// -----

%x, %w, %b = "test.op"() : () -> (tensor<1x64xbf16>, tensor<128x64xbf16>, tensor<64xbf16>)
%y = llm.linear %x, %w, %b : tensor<1x64xbf16>, tensor<128x64xbf16>, tensor<64xbf16> -> tensor<1x128xbf16>
// CHECK: llm.linear: bias has 64 elements but weight [128, 64] has 128 outputs

// -----

// llm.rope

%x, %pos = "test.op"() : () -> (tensor<1x64xbf16>, tensor<1xi32>)
%y = llm.rope %x, %pos {head_dim = 15 : i64, theta = 1.0e+04 : f32} : tensor<1x64xbf16>, tensor<1xi32>
// CHECK: llm.rope: head_dim must be even, got 15

// -----

%x, %pos = "test.op"() : () -> (tensor<1x64xbf16>, tensor<1xi32>)
%y = llm.rope %x, %pos {head_dim = 24 : i64, theta = 1.0e+04 : f32} : tensor<1x64xbf16>, tensor<1xi32>
// CHECK: llm.rope: head_dim 24 does not divide the input's 64 features

// -----

// llm.kv_cache_write

%c, %new, %pos = "test.op"() : () -> (tensor<1x2x16x32xbf16>, tensor<1x48xbf16>, tensor<1xi32>)
%y = llm.kv_cache_write %c, %new, %pos : tensor<1x2x16x32xbf16>, tensor<1x48xbf16>, tensor<1xi32>
// CHECK: llm.kv_cache_write: new must be [1, 64] ([batch, kv_heads*head_dim]), got tensor<1x48xbf16>

// -----

// llm.attention

%q, %c, %pos = "test.op"() : () -> (tensor<1x64xbf16>, tensor<1x3x16x16xbf16>, tensor<1xi32>)
%y = llm.attention %q, %c, %c, %pos {num_heads = 4 : i64, num_kv_heads = 3 : i64, head_dim = 16 : i64} : tensor<1x64xbf16>, tensor<1x3x16x16xbf16>, tensor<1x3x16x16xbf16>, tensor<1xi32>
// CHECK: llm.attention: num_kv_heads 3 does not divide num_heads 4

// -----

%q, %c, %pos = "test.op"() : () -> (tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1xi32>)
%y = llm.attention %q, %c, %c, %pos {num_heads = 8 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1x2x16x16xbf16>, tensor<1xi32>
// CHECK: llm.attention: query must be [?, 128] ([batch, num_heads*head_dim]), got tensor<1x64xbf16>

// -----

%q, %c, %pos = "test.op"() : () -> (tensor<1x64xbf16>, tensor<1x4x16x16xbf16>, tensor<1xi32>)
%y = llm.attention %q, %c, %c, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<1x64xbf16>, tensor<1x4x16x16xbf16>, tensor<1x4x16x16xbf16>, tensor<1xi32>
// CHECK: llm.attention: k cache must be [1, 2, ?, 16] ([batch, num_kv_heads, context, head_dim]), got tensor<1x4x16x16xbf16>

// -----

%q, %k, %v, %pos = "test.op"() : () -> (tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1x2x8x16xbf16>, tensor<1xi32>)
%y = llm.attention %q, %k, %v, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1x2x8x16xbf16>, tensor<1xi32>
// CHECK: llm.attention: k cache tensor<1x2x16x16xbf16> and v cache tensor<1x2x8x16xbf16> must have the same type

// -----

%q, %c, %pos = "test.op"() : () -> (tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1xi32>)
%y = llm.attention %q, %c, %c, %pos {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, sliding_window = 0 : i64} : tensor<1x64xbf16>, tensor<1x2x16x16xbf16>, tensor<1x2x16x16xbf16>, tensor<1xi32>
// CHECK: llm.attention: sliding_window must be positive, got 0

// -----

// llm.gelu, llm.all_reduce, llm.all_gather, llm.argmax

%x = "test.op"() : () -> tensor<1x64xbf16>
%y = llm.gelu %x {approximate = "erf"} : tensor<1x64xbf16>
// CHECK: llm.gelu: approximate must be one of none, tanh, got 'erf'

// -----

%x = "test.op"() : () -> tensor<1x64xbf16>
%y = llm.all_reduce %x {reduction = "max"} : tensor<1x64xbf16>
// CHECK: llm.all_reduce: reduction must be one of sum, got 'max'

// -----

// llm.all_gather: the result is the input with dim `dim` times the module's socket count
// (llm.sockets; 1 when unstamped).

builtin.module attributes {llm.sockets = 4 : i64} {
  %x = "test.op"() : () -> tensor<1x64xbf16>
  %y = llm.all_gather %x {dim = 1 : i64} : tensor<1x64xbf16> -> tensor<1x128xbf16>
}
// CHECK: llm.all_gather: result must be tensor<1x256xbf16>, got tensor<1x128xbf16>

// -----

%x = "test.op"() : () -> tensor<1x64xbf16>
%y = llm.all_gather %x {dim = 1 : i64} : tensor<1x64xbf16> -> tensor<1x128xbf16>
// CHECK: llm.all_gather: result must be tensor<1x64xbf16>, got tensor<1x128xbf16>

// -----

%x = "test.op"() : () -> tensor<1x64xbf16>
%y = llm.all_gather %x {dim = 2 : i64} : tensor<1x64xbf16> -> tensor<1x64xbf16>
// CHECK: llm.all_gather: dim 2 is out of range for the rank-2 input

// -----

%x = "test.op"() : () -> tensor<1x64xbf16>
%y = llm.all_gather %x {dim = 1 : i64} : tensor<1x64xbf16> -> tensor<1x64xf32>
// CHECK: llm.all_gather: result must be tensor<1x64xbf16>, got tensor<1x64xf32>

// -----

%x = "test.op"() : () -> tensor<2x128xbf16>
%y = llm.argmax %x : tensor<2x128xbf16> -> tensor<2xi64>
// CHECK: llm.argmax: result must be tensor<2xi32>, got tensor<2xi64>

// -----

// llm.moe

%x, %r, %g, %d = "test.op"() : () -> (tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x96x64xbf16>, tensor<4x64x96xbf16>)
%y = llm.moe %x, %r, %g, %g, %d {num_experts = 4 : i64, top_k = 5 : i64} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x96x64xbf16>, tensor<4x96x64xbf16>, tensor<4x64x96xbf16>
// CHECK: llm.moe: top_k must be in 1..num_experts = 1..4, got 5

// -----

%x, %r, %g, %d = "test.op"() : () -> (tensor<1x64xbf16>, tensor<8x64xbf16>, tensor<4x96x64xbf16>, tensor<4x64x96xbf16>)
%y = llm.moe %x, %r, %g, %g, %d {num_experts = 4 : i64, top_k = 2 : i64} : tensor<1x64xbf16>, tensor<8x64xbf16>, tensor<4x96x64xbf16>, tensor<4x96x64xbf16>, tensor<4x64x96xbf16>
// CHECK: llm.moe: router must be [4, 64] ([num_experts, hidden]), got tensor<8x64xbf16>

// -----

%x, %r, %g, %u, %d = "test.op"() : () -> (tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x96x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x96xbf16>)
%y = llm.moe %x, %r, %g, %u, %d {num_experts = 4 : i64, top_k = 2 : i64} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x96x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x96xbf16>
// CHECK: llm.moe: up must be [4, 96, 64] ([num_experts, intermediate, hidden]), got tensor<4x128x64xbf16>

// -----

%x, %r, %g, %d = "test.op"() : () -> (tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x96x64xbf16>, tensor<4x64x128xbf16>)
%y = llm.moe %x, %r, %g, %g, %d {num_experts = 4 : i64, top_k = 2 : i64} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x96x64xbf16>, tensor<4x96x64xbf16>, tensor<4x64x128xbf16>
// CHECK: llm.moe: down must be [4, 64, 96] ([num_experts, hidden, intermediate]), got tensor<4x64x128xbf16>

// -----

// llm.kv_cache_write / llm.attention: context_shards must divide the socket count
builtin.module attributes {llm.sockets = 4 : i64} {
  func.func @f(%c: tensor<1x1x4x32xbf16>, %new: tensor<1x32xbf16>, %pos: tensor<1xi32>) {
    %y = llm.kv_cache_write %c, %new, %pos {context_shards = 3 : i64} : tensor<1x1x4x32xbf16>, tensor<1x32xbf16>, tensor<1xi32>
    func.return
  }
}
// CHECK: llm.kv_cache_write: context_shards 3 must divide the module's 4 socket(s) (llm.sockets)

// -----

builtin.module attributes {llm.sockets = 4 : i64} {
  func.func @f(%q: tensor<1x64xbf16>, %c: tensor<1x1x4x32xbf16>, %pos: tensor<1xi32>) {
    %a = llm.attention %q, %c, %c, %pos {num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 32 : i64, context_shards = 0 : i64} : tensor<1x64xbf16>, tensor<1x1x4x32xbf16>, tensor<1x1x4x32xbf16>, tensor<1xi32>
    func.return
  }
}
// CHECK: llm.attention: context_shards must be positive, got 0

// -----

// llm.moe with its experts dealt over the sockets (expert_shards): each rank holds E / p
builtin.module attributes {llm.sockets = 2 : i64} {
  func.func @f(%x: tensor<1x64xbf16>, %r: tensor<4x64xbf16>, %g: tensor<4x96x64xbf16>, %d: tensor<4x64x96xbf16>) {
    %y = llm.moe %x, %r, %g, %g, %d {num_experts = 4 : i64, top_k = 2 : i64, expert_shards = 2 : i64} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x96x64xbf16>, tensor<4x96x64xbf16>, tensor<4x64x96xbf16>
    func.return
  }
}
// CHECK: llm.moe: gate must be [2, ?, 64] ([num_experts / expert_shards, intermediate, hidden]), got tensor<4x96x64xbf16>

// -----

builtin.module attributes {llm.sockets = 4 : i64} {
  func.func @f(%x: tensor<1x64xbf16>, %r: tensor<4x64xbf16>, %g: tensor<1x96x64xbf16>, %d: tensor<1x64x96xbf16>) {
    %y = llm.moe %x, %r, %g, %g, %d {num_experts = 4 : i64, top_k = 2 : i64, expert_shards = 3 : i64} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<1x96x64xbf16>, tensor<1x96x64xbf16>, tensor<1x64x96xbf16>
    func.return
  }
}
// CHECK: llm.moe: expert_shards 3 must divide the module's 4 socket(s) (llm.sockets)

// -----

// llm.param stack_shard: a stacked dim dealt over the ranks
builtin.module attributes {llm.sockets = 2 : i64} {
  llm.param @w stacked ["a", "b"] stack_shard #llm.shard<dim = 1, parts = 2> : tensor<1x4x4xbf16>
}
// CHECK: llm.param @w: stack_shard must name one of the 1 stacked dim(s), without interleave

// -----

builtin.module attributes {llm.sockets = 1 : i64} {
  llm.param @w stacked ["a", "b"] stack_shard #llm.shard<dim = 0, parts = 2> : tensor<1x4x4xbf16>
}
// CHECK: llm.param @w stack_shard: shard parts 2 must divide the module's 1 socket(s) (llm.sockets)

// -----

builtin.module attributes {llm.sockets = 2 : i64} {
  llm.param @w stacked ["a", "b", "c", "d"] stack_shard #llm.shard<dim = 0, parts = 2> : tensor<1x4x4xbf16>
}
// CHECK: llm.param @w: stacked sources list 4 slices at nesting level 0 but dim 0 of tensor<1x4x4xbf16> holds 1 in each of the 2 parts of its stack_shard (2 slices)
