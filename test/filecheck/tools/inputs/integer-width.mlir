// An integer type wider than MLIR allows (found by fuzzing: xDSL computed 1 << 4294967296
// for the value range, for minutes).
"test.op"() {layers = array<i4294967296>} : () -> ()
