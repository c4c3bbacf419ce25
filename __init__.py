"""rdu-compiler: an MLIR-style compiler (on xDSL) for LLM decode on reconfigurable dataflow units.

Installed, the repository's top-level folders are the subpackages of this one import package:
``rdu_compiler.frontend`` -> ``rdu_compiler.passes`` -> ``rdu_compiler.lowering`` ->
``rdu_compiler.simulator`` (data flows that way), with the dialects in
``rdu_compiler.rdu_dialect`` and the command-line tools in ``rdu_compiler.tools``. Importing this
module imports nothing else, so the simulator stays free of xDSL.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rdu-compiler")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
