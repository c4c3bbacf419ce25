"""Runs the lit/FileCheck suite under pytest, so README's one test command covers both."""

import os
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).parent / "filecheck"


def test_lit_suite():
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]))
    result = subprocess.run(
        [os.path.join(bin_dir, "lit"), "-sv", f"-j{os.cpu_count() or 2}", str(SUITE)],
        capture_output=True,
        text=True,
        env=env,
    )
    summary = result.stdout[-20000:] + result.stderr[-5000:]
    assert result.returncode == 0, f"lit suite failed:\n{summary}"
    assert "Passed" in result.stdout, f"lit ran no test:\n{summary}"
