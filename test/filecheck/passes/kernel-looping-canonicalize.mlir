// RUN: rdu-opt %s --split-input-file -p canonicalize | filecheck %s
// RUN: rdu-opt %s --split-input-file -p disable-kernel-looping,canonicalize | filecheck %s --check-prefix=OFF
// RUN: rdu-opt %s --split-input-file -p kernel-looping | filecheck %s --check-prefix=PASS

// Kernel looping is also the canonicalization of dfk.call (default options), unless the
// module is marked dfk.no_kernel_looping (what disable-kernel-looping does); the explicit
// pass is a request to loop and ignores the mark. The canonicalization stays local, as MLIR
// canonicalizations do: it adds the looped kernel and the stacked parameter beside the
// originals and erases no symbol (symbol-dce removes what became unused); the explicit pass
// erases the kernel and parameters it made unused.

builtin.module {
  llm.param @model.layers.0.w "model.layers.0.w" : tensor<8x8xbf16>
  llm.param @model.layers.1.w "model.layers.1.w" : tensor<8x8xbf16>
  llm.param @model.layers.2.w "model.layers.2.w" : tensor<8x8xbf16>
  dfk.kernel @layer(%h: tensor<1x8xbf16>, %p: tensor<1xi32>, %kc: tensor<1x1x4x8xbf16>, %w: tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>) {
    %x = llm.linear %h, %w : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %kn = llm.kv_cache_write %kc, %x, %p : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>, tensor<1xi32>
    dfk.return %kn, %x : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>
  }
  func.func @step(%h: tensor<1x8xbf16>, %p: tensor<1xi32>, %kcache: tensor<3x1x1x4x8xbf16>) -> (tensor<1x8xbf16>, tensor<3x1x1x4x8xbf16>) {
    %kc0 = dfk.slice %kcache[0] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w0 = llm.weight @model.layers.0.w : tensor<8x8xbf16>
    %k1, %h1 = dfk.call @layer(%h, %p, %kc0, %w0) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kc1 = dfk.slice %kcache[1] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w1 = llm.weight @model.layers.1.w : tensor<8x8xbf16>
    %k2, %h2 = dfk.call @layer(%h1, %p, %kc1, %w1) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kc2 = dfk.slice %kcache[2] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w2 = llm.weight @model.layers.2.w : tensor<8x8xbf16>
    %k3, %h3 = dfk.call @layer(%h2, %p, %kc2, %w2) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kout = dfk.stack %k1, %k2, %k3 : tensor<1x1x4x8xbf16> -> tensor<3x1x1x4x8xbf16>
    func.return %h3, %kout : tensor<1x8xbf16>, tensor<3x1x1x4x8xbf16>
  }
}

// CHECK:       llm.param @model.layers.0.w "model.layers.0.w"
// CHECK-NEXT:  llm.param @model.layers.1.w "model.layers.1.w"
// CHECK-NEXT:  llm.param @model.layers.2.w "model.layers.2.w"
// CHECK-NEXT:  llm.param @model.layers.0_to_2.w stacked ["model.layers.0.w", "model.layers.1.w", "model.layers.2.w"] : tensor<3x8x8xbf16>
// CHECK-NEXT:  dfk.kernel @layer.looped(
// CHECK-NEXT:    dfk.loop {{%.*}} = 0 to 3 pipeline_depth 2 carried(
// CHECK:       dfk.kernel @layer(
// CHECK:       func.func @step([[H:%.*]]: tensor<1x8xbf16>, [[P:%.*]]: tensor<1xi32>, [[KCACHE:%.*]]: tensor<3x1x1x4x8xbf16>)
// CHECK-NEXT:    [[WS:%.*]] = llm.weight @model.layers.0_to_2.w : tensor<3x8x8xbf16>
// CHECK-NEXT:    [[K:%.*]], [[HN:%.*]] = dfk.call @layer.looped([[H]], [[P]], [[KCACHE]], [[WS]])
// CHECK-NEXT:    func.return [[HN]], [[K]]

// OFF:         builtin.module attributes {dfk.no_kernel_looping} {
// OFF-NOT:     dfk.loop
// OFF-COUNT-3:   dfk.call @layer(
// OFF-NOT:       dfk.call

// PASS:        builtin.module {
// PASS-NEXT:     llm.param @model.layers.0_to_2.w stacked
// PASS-NEXT:     dfk.kernel @layer.looped(
// PASS-NOT:      llm.param
// PASS-NOT:      dfk.kernel @layer(
// PASS:          dfk.call @layer.looped(

// -----

builtin.module attributes {dfk.no_kernel_looping} {
  llm.param @model.layers.0.w "model.layers.0.w" : tensor<8x8xbf16>
  llm.param @model.layers.1.w "model.layers.1.w" : tensor<8x8xbf16>
  llm.param @model.layers.2.w "model.layers.2.w" : tensor<8x8xbf16>
  dfk.kernel @layer(%h: tensor<1x8xbf16>, %p: tensor<1xi32>, %kc: tensor<1x1x4x8xbf16>, %w: tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>) {
    %x = llm.linear %h, %w : tensor<1x8xbf16>, tensor<8x8xbf16> -> tensor<1x8xbf16>
    %kn = llm.kv_cache_write %kc, %x, %p : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>, tensor<1xi32>
    dfk.return %kn, %x : tensor<1x1x4x8xbf16>, tensor<1x8xbf16>
  }
  func.func @step(%h: tensor<1x8xbf16>, %p: tensor<1xi32>, %kcache: tensor<3x1x1x4x8xbf16>) -> (tensor<1x8xbf16>, tensor<3x1x1x4x8xbf16>) {
    %kc0 = dfk.slice %kcache[0] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w0 = llm.weight @model.layers.0.w : tensor<8x8xbf16>
    %k1, %h1 = dfk.call @layer(%h, %p, %kc0, %w0) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kc1 = dfk.slice %kcache[1] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w1 = llm.weight @model.layers.1.w : tensor<8x8xbf16>
    %k2, %h2 = dfk.call @layer(%h1, %p, %kc1, %w1) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kc2 = dfk.slice %kcache[2] : tensor<3x1x1x4x8xbf16> -> tensor<1x1x4x8xbf16>
    %w2 = llm.weight @model.layers.2.w : tensor<8x8xbf16>
    %k3, %h3 = dfk.call @layer(%h2, %p, %kc2, %w2) : (tensor<1x8xbf16>, tensor<1xi32>, tensor<1x1x4x8xbf16>, tensor<8x8xbf16>) -> (tensor<1x1x4x8xbf16>, tensor<1x8xbf16>)
    %kout = dfk.stack %k1, %k2, %k3 : tensor<1x1x4x8xbf16> -> tensor<3x1x1x4x8xbf16>
    func.return %h3, %kout : tensor<1x8xbf16>, tensor<3x1x1x4x8xbf16>
  }
}

// CHECK:       builtin.module attributes {dfk.no_kernel_looping} {
// CHECK-NOT:   dfk.loop
// CHECK-COUNT-3: dfk.call @layer(

// OFF:         builtin.module attributes {dfk.no_kernel_looping} {
// OFF-NOT:     dfk.loop
// OFF-COUNT-3:   dfk.call @layer(

// PASS:        builtin.module attributes {dfk.no_kernel_looping} {
// PASS:          dfk.call @layer.looped(
