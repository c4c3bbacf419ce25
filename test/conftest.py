"""What the whole suite shares: the `mlir_opt` fixture, and Hypothesis settings profiles,
chosen by HYPOTHESIS_PROFILE, else `ci` when CI is set, else `dev`:

- `dev`: 30 examples a property, random (each run explores new inputs);
- `ci`: the same 30, derandomized (a failure in CI reproduces with the same command);
- `thorough`: 500 examples a property, for a long local campaign.

No deadline in any: the suite runs on machines shared with other work, where an example's
time says nothing about the code. Properties whose examples are expensive set a smaller
`max_examples` of their own.
"""

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def mlir_opt() -> str:
    """Upstream `mlir-opt` (MLIR_OPT, else on PATH, else LLVM 22's): the tests that need it
    are skipped without it, except under CI (`CI` set), where its absence is a failure."""
    for candidate in (os.environ.get("MLIR_OPT"), "mlir-opt", "mlir-opt-22"):
        if candidate and (found := shutil.which(candidate)):
            return found
    fallback = Path("/usr/lib/llvm-22/bin/mlir-opt")
    if fallback.exists():
        return str(fallback)
    message = "upstream mlir-opt not found (Debian package mlir-22-tools)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
