func.func @f() -> i32 {
  %0 = arith.constant 1 : i32
  func.return
}
