// A float attribute too large for its type (found by fuzzing: a traceback from xDSL).
"test.op"() {theta = 1.0e6 : f16} : () -> ()
