// RUN: rdu-import tiny-mixtral --layers 1 --context 8 | rdu-opt -p 'shard-tensor-parallel{sockets=2 moe=expert}' | filecheck %s --check-prefix=EXP
// RUN: rdu-import tiny-mixtral --layers 1 --context 8 | rdu-opt -p 'shard-tensor-parallel{sockets=2 moe=expert}' --print-op-generic | rdu-opt | filecheck %s --check-prefix=EXP
// RUN: rdu-import tiny-mixtral --layers 2 --context 8 | rdu-opt -p 'outline-kernels,kernel-looping,shard-tensor-parallel{sockets=4 moe=expert}' | filecheck %s --check-prefix=LOOP
// RUN: rdu-import tiny-mixtral --layers 2 --context 8 | rdu-opt -p 'rdu-pipeline{sockets=4 moe=expert}' -t rdu-program | filecheck %s --check-prefix=PROGRAM
// RUN: rdu-import mixtral-8x7b --layers 1 | rdu-opt -p 'shard-tensor-parallel{sockets=16 moe=expert}' | filecheck %s --check-prefix=FEWER
// RUN: rdu-import tiny-mixtral --layers 1 | not rdu-opt -p 'shard-tensor-parallel{sockets=2 moe=both}' 2>&1 | filecheck %s --check-prefix=OPTION
// RUN: rdu-import tiny-mixtral --layers 1 | not rdu-opt -p 'rdu-pipeline{sockets=2 moe=both}' 2>&1 | filecheck %s --check-prefix=PIPELINE

// moe=expert: tiny-mixtral's 4 experts dealt over the sockets. Each expert tensor keeps every
// slice's checkpoint name but holds the rank's share of them (`stack_shard`, rank r: block
// r * parts / N of the experts dim); the router stays whole; llm.moe says over how many ranks
// its experts are dealt, and the all-reduce after it adds the ranks' sums.

// EXP:      builtin.module attributes {llm.model = "tiny-mixtral", llm.sockets = 2 : i64}
// EXP:      llm.param @model.layers.0.block_sparse_moe.gate.weight "model.layers.0.block_sparse_moe.gate.weight" : tensor<4x64xbf16>
// EXP-NEXT: llm.param @model.layers.0.block_sparse_moe.experts.w1 stacked ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] stack_shard #llm.shard<dim = 0, parts = 2> : tensor<2x128x64xbf16>
// EXP-NEXT: llm.param @model.layers.0.block_sparse_moe.experts.w3 stacked [{{.*}}] stack_shard #llm.shard<dim = 0, parts = 2> : tensor<2x128x64xbf16>
// EXP-NEXT: llm.param @model.layers.0.block_sparse_moe.experts.w2 stacked [{{.*}}] stack_shard #llm.shard<dim = 0, parts = 2> : tensor<2x64x128xbf16>
// EXP:      [[MOE:%.*]] = llm.moe %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {{{.*}}expert_shards = 2 : i64{{.*}}} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<2x128x64xbf16>, tensor<2x128x64xbf16>, tensor<2x64x128xbf16>
// EXP-NEXT: llm.all_reduce [[MOE]] {{.*}}reduction = "sum"{{.*}} : tensor<1x64xbf16>

// Looped: the experts dim is the second stacked dim (layers x experts).
// LOOP:     llm.param @model.layers.0_to_1.block_sparse_moe.experts.w1 stacked {{.*}} stack_shard #llm.shard<dim = 1, parts = 4> : tensor<2x1x128x64xbf16>
// LOOP:     llm.moe {{.*}}expert_shards = 4 : i64{{.*}} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<1x128x64xbf16>, tensor<1x128x64xbf16>, tensor<1x64x128xbf16>

// In the program: expert e's checkpoint tensor on socket e only, in the one slot of each
// socket's tensor; the units start at the socket's first expert.
// PROGRAM:      "name": "model.layers.0.block_sparse_moe.experts.w1.weight",
// PROGRAM-NEXT: "kind": "weight",
// PROGRAM-NEXT: "shape": [1,128,64],
// PROGRAM:      "value": "model.layers.0.block_sparse_moe.experts.0.w1.weight",
// PROGRAM:      "at": [0,0,0],
// PROGRAM-NEXT: "sockets": [0]
// PROGRAM:      "value": "model.layers.0.block_sparse_moe.experts.1.w1.weight",
// PROGRAM:      "at": [0,0,0],
// PROGRAM-NEXT: "sockets": [1]
// PROGRAM:      "op": "moe_partial",
// PROGRAM:      "attrs": {"expert_start":0,"normalize_top_k":true,"num_experts":4,"top_k":2},
// PROGRAM:      "attr_by_socket": {"expert_start":[0,1,2,3]}

// Fewer experts than sockets (Mixtral's 8 on 16): each expert on 2 sockets, which deal its
// intermediate rows (w2 [hidden, intermediate]: its columns) as a #llm.shard interleave.
// FEWER:      llm.param @model.layers.0.block_sparse_moe.experts.w2 stacked [{{.*}}] shard #llm.shard<dim = 0, parts = 1, interleave_dim = 1, interleave = 2> stack_shard #llm.shard<dim = 0, parts = 8> : tensor<1x4096x7168xbf16>
// FEWER:      llm.moe {{.*}}expert_shards = 8 : i64{{.*}} : tensor<1x4096xbf16>, tensor<8x4096xbf16>, tensor<1x7168x4096xbf16>, tensor<1x7168x4096xbf16>, tensor<1x4096x7168xbf16>
// OPTION: rdu-opt: error: -p 'shard-tensor-parallel{sockets=2 moe=both}': shard-tensor-parallel option moe: 'both' is not one of tensor, expert
// PIPELINE: rdu-opt: error: -p 'rdu-pipeline{sockets=2 moe=both}': rdu-pipeline option moe: 'both' is not one of tensor, expert
