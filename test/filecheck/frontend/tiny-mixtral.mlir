// RUN: rdu-import tiny-mixtral --context 16 | filecheck %s
// RUN: rdu-import tiny-mixtral --context 16 | rdu-opt --print-op-generic | rdu-opt | filecheck %s

// Mixtral: the MLP is one llm.moe (4 experts, top-2, renormalized) over one stacked param
// per layer and role (w1 = gate, w3 = up, w2 = down), whose slices are the per-expert
// checkpoint tensors.

// CHECK:      builtin.module attributes {llm.model = "tiny-mixtral"} {
// CHECK:        llm.param @model.layers.0.post_attention_layernorm.weight
// CHECK-NEXT:   llm.param @model.layers.0.block_sparse_moe.gate.weight "model.layers.0.block_sparse_moe.gate.weight" : tensor<4x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.block_sparse_moe.experts.w1 stacked ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.2.w1.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight"] : tensor<4x128x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.block_sparse_moe.experts.w3 stacked ["model.layers.0.block_sparse_moe.experts.0.w3.weight", "model.layers.0.block_sparse_moe.experts.1.w3.weight", "model.layers.0.block_sparse_moe.experts.2.w3.weight", "model.layers.0.block_sparse_moe.experts.3.w3.weight"] : tensor<4x128x64xbf16>
// CHECK-NEXT:   llm.param @model.layers.0.block_sparse_moe.experts.w2 stacked ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight", "model.layers.0.block_sparse_moe.experts.2.w2.weight", "model.layers.0.block_sparse_moe.experts.3.w2.weight"] : tensor<4x64x128xbf16>
// CHECK-NOT:    mlp.
// CHECK:        func.func @decode_step
// CHECK:          llm.weight @model.layers.0.post_attention_layernorm.weight
// CHECK-NEXT:     [[Y:%.*]] = llm.rms_norm {{.*}} {llm.layer = 0 : i64, eps = 1.000000e-05 : f32}
// CHECK-NEXT:     [[R:%.*]] = llm.weight @model.layers.0.block_sparse_moe.gate.weight {llm.layer = 0 : i64} : tensor<4x64xbf16>
// CHECK-NEXT:     [[W1:%.*]] = llm.weight @model.layers.0.block_sparse_moe.experts.w1 {llm.layer = 0 : i64} : tensor<4x128x64xbf16>
// CHECK-NEXT:     [[W3:%.*]] = llm.weight @model.layers.0.block_sparse_moe.experts.w3 {llm.layer = 0 : i64} : tensor<4x128x64xbf16>
// CHECK-NEXT:     [[W2:%.*]] = llm.weight @model.layers.0.block_sparse_moe.experts.w2 {llm.layer = 0 : i64} : tensor<4x64x128xbf16>
// CHECK-NEXT:     [[M:%.*]] = llm.moe [[Y]], [[R]], [[W1]], [[W3]], [[W2]] {llm.layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, normalize_top_k} : tensor<1x64xbf16>, tensor<4x64xbf16>, tensor<4x128x64xbf16>, tensor<4x128x64xbf16>, tensor<4x64x128xbf16>
// CHECK-NEXT:     {{%.*}} = llm.add {{%.*}}, [[M]] {llm.layer = 0 : i64} : tensor<1x64xbf16>
// CHECK:          llm.moe {{.*}} {llm.layer = 3 : i64, num_experts = 4 : i64, top_k = 2 : i64, normalize_top_k}
// CHECK-NOT:      llm.silu
