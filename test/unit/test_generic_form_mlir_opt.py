"""The generic form rdu-opt prints must stay valid MLIR.

Every round-trip file of the lit suite (those using `%generic-roundtrip`) is printed in
generic form, parsed and re-printed by upstream `mlir-opt --allow-unregistered-dialect`,
and mlir-opt's output is parsed back by rdu-opt. Under CI (`CI` set) a missing mlir-opt is
a failure, never a skip.
"""

import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).parents[1] / "filecheck"
ROUNDTRIP_FILES = sorted(
    path for path in SUITE.rglob("*.mlir") if "%generic-roundtrip" in path.read_text()
)


def run(cmd: list[str], stdin: str) -> str:
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    return result.stdout


def test_roundtrip_files_exist():
    assert ROUNDTRIP_FILES, "no round-trip files found in the lit suite"


@pytest.mark.parametrize("path", ROUNDTRIP_FILES, ids=lambda p: str(p.relative_to(SUITE)))
def test_generic_form_parses_with_mlir_opt(path: Path, mlir_opt: str):
    rdu_opt = [sys.executable, "-m", "rdu_compiler.tools.rdu_opt"]
    generic = run([*rdu_opt, "--print-op-generic", str(path)], "")
    upstream = run([mlir_opt, "--allow-unregistered-dialect", "--mlir-print-op-generic"], generic)
    reparsed = run(rdu_opt, upstream)
    assert reparsed.strip().startswith("builtin.module")
