// RUN: rdu-opt %s --split-input-file --parsing-diagnostics | filecheck %s

// Errors found while parsing (located at the offending token).

%x = "test.op"() {s = #llm.rope_scaling<yarn, factor = 4.0>} : () -> tensor<1x64xbf16>
// CHECK: {{.*}}:5:41
// CHECK: unknown rope scaling kind 'yarn' (expected one of: linear, llama3)

// -----

%x = "test.op"() {s = #llm.rope_scaling<linear, factor = 4.0, low_freq_factor = 1.0>} : () -> tensor<1x64xbf16>
// CHECK: rope scaling 'linear' has no field 'low_freq_factor' (fields: factor)

// -----

%x = "test.op"() {s = #llm.rope_scaling<linear, factor = 4.0, factor = 2.0>} : () -> tensor<1x64xbf16>
// CHECK: duplicate rope scaling field 'factor'

// -----

%x = "test.op"() {s = #llm.rope_scaling<llama3, factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192.0>} : () -> tensor<1x64xbf16>
// CHECK: rope scaling field 'original_max_position_embeddings' must be an integer, got 8192.0

// -----

%x = "test.op"() {s = #llm.rope_scaling<linear, factor = -2.0>} : () -> tensor<1x64xbf16>
// CHECK: rope scaling field 'factor' must be positive, got -2.0

// -----

%x = "test.op"() {s = #llm.rope_scaling<llama3, factor = 8.0>} : () -> tensor<1x64xbf16>
// CHECK: rope scaling 'llama3' is missing field(s): low_freq_factor, high_freq_factor, original_max_position_embeddings

// -----

%x = "test.op"() {s = #llm.rope_scaling<llama3, factor = 8.0, low_freq_factor = 4.0, high_freq_factor = 1.0, original_max_position_embeddings = 8192>} : () -> tensor<1x64xbf16>
// CHECK: rope scaling 'llama3' needs high_freq_factor > low_freq_factor, got 1.0 <= 4.0

// -----

llm.param @p stacked "a" : tensor<2x4xbf16>
// CHECK: expected a list of checkpoint names after 'stacked'

// -----

llm.param @p "a" : memref<4xbf16>
// CHECK: llm.param type must be a tensor, got memref<4xbf16>

// -----

llm.param @w stacked ["a", "b"] stack_shard "experts" : tensor<1x4x4xbf16>
// CHECK: expected a #llm.shard after 'stack_shard'
