"""lit configuration for rdu-compiler's FileCheck suites."""

import os
import sys

import lit.formats

config.name = "rdu-compiler"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.excludes = ["lit.cfg.py", "inputs", "Output"]
config.test_source_root = os.path.dirname(__file__)
repo_root = os.path.dirname(os.path.dirname(config.test_source_root))

# The virtual environment's bin/ (where rdu-opt, xdsl-opt and filecheck live): not resolved
# through symlinks, so a venv whose python is a symlink still puts its own bin/ first.
bin_dir = os.path.dirname(sys.executable)
# Under pytest (test/test_filecheck.py), the tools run warm: RDU_LIT_WARM_TOOLS names a folder
# of stand-ins that fork them from one process that imported everything (test/warm_tools.py).
warm_tools = os.environ.get("RDU_LIT_WARM_TOOLS")
path = [warm_tools] if warm_tools else []
config.environment["PATH"] = os.pathsep.join([*path, bin_dir, config.environment.get("PATH", "")])
for var in ("HOME", "TMPDIR"):
    if var in os.environ:
        config.environment[var] = os.environ[var]

config.substitutions.append(("%repo", repo_root))
config.substitutions.append(("%examples", os.path.join(repo_root, "examples")))
# Round trips: the custom form re-parsed, and the generic form re-parsed.
config.substitutions.append(("%roundtrip", "rdu-opt | rdu-opt"))
config.substitutions.append(("%generic-roundtrip", "rdu-opt --print-op-generic | rdu-opt"))
