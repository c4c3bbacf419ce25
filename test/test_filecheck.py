"""Runs the lit/FileCheck suite under pytest, so README's one test command covers both.

The tools run warm (test/warm_tools.py): a server imports xDSL and the compiler once and forks
each run, which saves about a second of imports per command of the suite's RUN lines."""

import os
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).parent / "filecheck"


def test_lit_suite(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    shims = tmp_path / "warm-tools"
    shims.mkdir()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "warm_tools.py"), str(tmp_path / "socket"),
         str(shims)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        env = dict(
            os.environ,
            PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            RDU_LIT_WARM_TOOLS=str(shims),
        )
        result = subprocess.run(
            [os.path.join(bin_dir, "lit"), "-sv", f"-j{os.cpu_count() or 2}", str(SUITE)],
            capture_output=True,
            text=True,
            env=env,
        )
    finally:
        server.kill()
        server.wait()
    summary = result.stdout[-20000:] + result.stderr[-5000:]
    assert result.returncode == 0, f"lit suite failed:\n{summary}"
    assert "Passed" in result.stdout, f"lit ran no test:\n{summary}"
