func.func @f(%x: tensor<1x64xbf16>, %w: tensor<128x32xbf16>) -> tensor<1x128xbf16> {
  %y = llm.linear %x, %w : tensor<1x64xbf16>, tensor<128x32xbf16> -> tensor<1x128xbf16>
  func.return %y : tensor<1x128xbf16>
}
