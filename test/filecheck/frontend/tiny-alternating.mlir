// RUN: rdu-import tiny-alternating --context 16 | filecheck %s
// RUN: rdu-import tiny-alternating --context 16 | rdu-opt --print-op-generic | rdu-opt | filecheck %s

// Qwen2 with layer_types sliding(8) / full alternating: only layers 0 and 2 slide.

// CHECK:      builtin.module attributes {llm.model = "tiny-alternating"} {
// CHECK:        llm.attention {{.*}} {llm.layer = 0 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, sliding_window = 8 : i64} :
// CHECK:        llm.attention {{.*}} {llm.layer = 1 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} :
// CHECK:        llm.attention {{.*}} {llm.layer = 2 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, sliding_window = 8 : i64} :
// CHECK:        llm.attention {{.*}} {llm.layer = 3 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} :
// CHECK-NOT:    llm.attention
