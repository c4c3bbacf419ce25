// RUN: rdu-opt %s --split-input-file -p outline-kernels | filecheck %s
// RUN: rdu-opt %s --split-input-file -p 'outline-kernels{policy=op}' | filecheck %s --check-prefix=OP

// A two-layer decode step (hidden 8, vocab 16, one kv head of dim 8, context 4). Policy
// `layer`: the embedding, one kernel for both layers (they differ only in the weights and
// cache slices passed in), the LM head with final norm and argmax. Weight reads and the cache
// slice / stack plumbing stay in the caller; each call carries its layer.

builtin.module {
  llm.param @model.embed_tokens.weight "model.embed_tokens.weight" : tensor<16x8xbf16>
  llm.param @model.layers.0.w "model.layers.0.w" : tensor<8x8xbf16>
  llm.param @model.layers.1.w "model.layers.1.w" : tensor<8x8xbf16>
  llm.param @model.norm.weight "model.norm.weight" : tensor<8xbf16>
  func.func @decode_step(%tokens: tensor<1xi32>, %pos: tensor<1xi32>, %kcache: tensor<2x1x1x4x8xbf16>) -> (tensor<1x16xbf16>, tensor<1xi32>, tensor<2x1x1x4x8xbf16>) {
    %table = llm.weight @model.embed_tokens.weight : tensor<16x8xbf16>
    %h = llm.embedding %table, %tokens : tensor<16x8xbf16>, tensor<1xi32> -> tensor<1x8xbf16>
    %kc0 = dfk.slice %kcache[0] : tensor<2x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w0 = llm.weight @model.layers.0.w {llm.layer = 0 : i64} : tensor<8x8xbf16>
    %x0 = llm.linear %h, %w0 {llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %kn0 = llm.kv_cache_write %kc0, %x0, %pos {llm.layer = 0 : i64} : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>, tensor<1xi32>
    %a0 = llm.attention %x0, %kn0, %kn0, %pos {num_heads = 1 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<1x1x4x8xbf16>, tensor<1x1x4x8xbf16>, tensor<1xi32>
    %h1 = llm.add %h, %a0 {llm.layer = 0 : i64} : tensor<1x8xbf16>
    %kc1 = dfk.slice %kcache[1] : tensor<2x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w1 = llm.weight @model.layers.1.w {llm.layer = 1 : i64} : tensor<8x8xbf16>
    %x1 = llm.linear %h1, %w1 {llm.layer = 1 : i64} : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %kn1 = llm.kv_cache_write %kc1, %x1, %pos {llm.layer = 1 : i64} : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>, tensor<1xi32>
    %a1 = llm.attention %x1, %kn1, %kn1, %pos {num_heads = 1 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, llm.layer = 1 : i64} : tensor<1x8xbf16>, tensor<1x1x4x8xbf16>, tensor<1x1x4x8xbf16>, tensor<1xi32>
    %h2 = llm.add %h1, %a1 {llm.layer = 1 : i64} : tensor<1x8xbf16>
    %nw = llm.weight @model.norm.weight : tensor<8xbf16>
    %hn = llm.rms_norm %h2, %nw {eps = 1.0e-05 : f32} : tensor<1x8xbf16>, tensor<8xbf16>
    %table2 = llm.weight @model.embed_tokens.weight : tensor<16x8xbf16>
    %logits = llm.linear %hn, %table2 : tensor<1x8xbf16>, tensor<16x8xbf16> -> tensor<1x16xbf16>
    %next = llm.argmax %logits : tensor<1x16xbf16> -> tensor<1xi32>
    %kout = dfk.stack %kn0, %kn1 : tensor<1x1x4x8xbf16> -> tensor<2x1x1x4x8xbf16>
    func.return %logits, %next, %kout : tensor<1x16xbf16>, tensor<1xi32>, tensor<2x1x1x4x8xbf16>
  }
}

// CHECK:       dfk.kernel @embed([[T:%.*]]: tensor<16x8xbf16>, [[IDS:%.*]]: tensor<1xi32>) -> tensor<1x8xbf16> {
// CHECK-NEXT:    [[E:%.*]] = llm.embedding [[T]], [[IDS]]
// CHECK-NEXT:    dfk.return [[E]] : tensor<1x8xbf16>
// CHECK-NEXT:  }
// CHECK-NEXT:  dfk.kernel @decoder_layer([[H:%.*]]: tensor<1x8xbf16>, [[W:%.*]]: tensor<8x8xbf16>, [[KC:%.*]]: tensor<1x1x4x8xbf16>, [[P:%.*]]: tensor<1xi32>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>) {
// CHECK-NEXT:    [[X:%.*]] = llm.linear [[H]], [[W]] : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
// CHECK-NEXT:    [[KN:%.*]] = llm.kv_cache_write [[KC]], [[X]], [[P]] :
// CHECK-NEXT:    [[A:%.*]] = llm.attention [[X]], [[KN]], [[KN]], [[P]] {num_heads = 1 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64} :
// CHECK-NEXT:    [[HN:%.*]] = llm.add [[H]], [[A]] : tensor<1x8xbf16>
// CHECK-NEXT:    dfk.return [[KN]], [[HN]] : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>
// CHECK-NEXT:  }
// CHECK-NEXT:  dfk.kernel @lm_head([[H:%.*]]: tensor<1x8xbf16>, [[NW:%.*]]: tensor<8xbf16>, [[T:%.*]]: tensor<16x8xbf16>) -> (tensor<1x16xbf16>, tensor<1xi32>) {
// CHECK-NEXT:    [[N:%.*]] = llm.rms_norm [[H]], [[NW]]
// CHECK-NEXT:    [[L:%.*]] = llm.linear [[N]], [[T]]
// CHECK-NEXT:    [[NEXT:%.*]] = llm.argmax [[L]]
// CHECK-NEXT:    dfk.return [[L]], [[NEXT]]
// CHECK-NEXT:  }
// CHECK-NOT:   dfk.kernel
// CHECK:       func.func @decode_step([[TOK:%.*]]: tensor<1xi32>, [[POS:%.*]]: tensor<1xi32>, [[KCACHE:%.*]]: tensor<2x1x1x4x8xbf16>)
// CHECK-NEXT:    [[TABLE:%.*]] = llm.weight @model.embed_tokens.weight
// CHECK-NEXT:    [[H0:%.*]] = dfk.call @embed([[TABLE]], [[TOK]])
// CHECK-NEXT:    [[KC0:%.*]] = dfk.slice [[KCACHE]][0]
// CHECK-NEXT:    [[W0:%.*]] = llm.weight @model.layers.0.w {llm.layer = 0 : i64}
// CHECK-NEXT:    [[KN0:%.*]], [[H1:%.*]] = dfk.call @decoder_layer([[H0]], [[W0]], [[KC0]], [[POS]]) {llm.layer = 0 : i64}
// CHECK-NEXT:    [[KC1:%.*]] = dfk.slice [[KCACHE]][1]
// CHECK-NEXT:    [[W1:%.*]] = llm.weight @model.layers.1.w {llm.layer = 1 : i64}
// CHECK-NEXT:    [[KN1:%.*]], [[H2:%.*]] = dfk.call @decoder_layer([[H1]], [[W1]], [[KC1]], [[POS]]) {llm.layer = 1 : i64}
// CHECK-NEXT:    [[NW:%.*]] = llm.weight @model.norm.weight
// CHECK-NEXT:    [[T2:%.*]] = llm.weight @model.embed_tokens.weight
// CHECK-NEXT:    [[LOGITS:%.*]], [[NEXT:%.*]] = dfk.call @lm_head([[H2]], [[NW]], [[T2]])
// CHECK-NEXT:    [[KOUT:%.*]] = dfk.stack [[KN0]], [[KN1]]
// CHECK-NEXT:    func.return [[LOGITS]], [[NEXT]], [[KOUT]]

// OP:          dfk.kernel @embedding(
// OP-NEXT:       llm.embedding
// OP:          dfk.kernel @linear(
// OP-NEXT:       llm.linear
// OP:          dfk.kernel @kv_cache_write(
// OP:          dfk.kernel @attention(
// OP:          dfk.kernel @add(
// OP:          dfk.kernel @rms_norm(
// OP:          dfk.kernel @linear_1({{%.*}}: tensor<1x8xbf16>, {{%.*}}: tensor<16x8xbf16>)
// OP:          dfk.kernel @argmax(
// OP-NOT:      dfk.kernel
// OP:          func.func @decode_step
// OP:            dfk.call @embedding(
// OP:            dfk.call @linear({{.*}}) {llm.layer = 0 : i64}
// OP-NEXT:       dfk.call @kv_cache_write({{.*}}) {llm.layer = 0 : i64}
// OP-NEXT:       dfk.call @attention({{.*}}) {llm.layer = 0 : i64}
// OP-NEXT:       dfk.call @add({{.*}}) {llm.layer = 0 : i64}
// OP:            dfk.call @linear({{.*}}) {llm.layer = 1 : i64}
// OP:            dfk.call @rms_norm(
// OP-NEXT:       llm.weight @model.embed_tokens.weight
// OP-NEXT:       dfk.call @linear_1(
// OP-NEXT:       dfk.call @argmax(

// -----

// Layers of two kinds (layer 1 has another eps): two layer kernels, named in order of first
// appearance; layers 0 and 2 share the first.

builtin.module {
  func.func @step(%h: tensor<1x8xbf16>, %w: tensor<8xbf16>) -> tensor<1x8xbf16> {
    %a = llm.rms_norm %h, %w {eps = 1.0e-05 : f32, llm.layer = 0 : i64} : tensor<1x8xbf16>, tensor<8xbf16>
    %b = llm.rms_norm %a, %w {eps = 1.0e-06 : f32, llm.layer = 1 : i64} : tensor<1x8xbf16>, tensor<8xbf16>
    %c = llm.rms_norm %b, %w {eps = 1.0e-05 : f32, llm.layer = 2 : i64} : tensor<1x8xbf16>, tensor<8xbf16>
    func.return %c : tensor<1x8xbf16>
  }
}

// CHECK:       dfk.kernel @decoder_layer(
// CHECK-NEXT:    llm.rms_norm {{.*}} {eps = 1.000000e-05 : f32}
// CHECK:       dfk.kernel @decoder_layer_1(
// CHECK-NEXT:    llm.rms_norm {{.*}} {eps = 1.000000e-06 : f32}
// CHECK:       func.func @step([[H:%.*]]: tensor<1x8xbf16>, [[W:%.*]]: tensor<8xbf16>)
// CHECK-NEXT:    [[A:%.*]] = dfk.call @decoder_layer([[H]], [[W]]) {llm.layer = 0 : i64}
// CHECK-NEXT:    [[B:%.*]] = dfk.call @decoder_layer_1([[A]], [[W]]) {llm.layer = 1 : i64}
// CHECK-NEXT:    [[C:%.*]] = dfk.call @decoder_layer([[B]], [[W]]) {llm.layer = 2 : i64}
// CHECK-NEXT:    func.return [[C]]

// OP:          dfk.kernel @rms_norm(
// OP:          dfk.kernel @rms_norm_1(
// OP:          func.func @step
// OP-NEXT:       dfk.call @rms_norm(
// OP-NEXT:       dfk.call @rms_norm_1(
// OP-NEXT:       dfk.call @rms_norm(

