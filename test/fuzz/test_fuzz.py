"""A seeded fuzzing budget in CI: mutated IR (every stage), config.json files, program files and
command lines through the real tools; every case ends in exit 0 or a refusal, never a
traceback, hang, crash or changed output file (`fuzzing.py` says what each outcome means; run
it directly for longer campaigns). The budget is a smoke test, every input kind about ten
times; campaigns of thousands of cases find the rare failures (docs say how to run one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import FAILURES, Case, Outcome, run_campaign, signature

import rdu_compiler

CASES = 80
SEED = 12


def test_seeded_fuzzing_budget():
    campaign = run_campaign(CASES, SEED, jobs=2, timeout=60)
    counts = campaign.counts
    assert sum(counts.values()) == CASES
    report = "\n".join(
        f"{o.status}: {o.case.tool} {' '.join(o.case.argv)}\n{o.stderr[-2000:]}"
        for o in campaign.failures
    )
    assert not campaign.failures, report
    # The budget reaches past the refusals: some mutated inputs still run to the end.
    assert counts["ok"] > 0 and counts["refused"] > 0, campaign.summary()
    assert not set(counts) & set(FAILURES)


def _traceback(*frames: Path) -> str:
    lines = ["Traceback (most recent call last):"]
    lines += [f'  File "{frame}", line {n}, in f' for n, frame in enumerate(frames, start=10)]
    return "\n".join([*lines, "KeyError: 'x'"])


def _signature_of(stderr: str) -> str:
    case = Case("rdu", "rdu-opt", [])
    return signature(Outcome(case, "traceback", 0.1, stderr))


@pytest.mark.parametrize("install", ["editable", "wheel"])
def test_failures_group_by_our_innermost_frame_however_installed(tmp_path, monkeypatch, install):
    """The key names the innermost frame of rdu_compiler's own code by its path in the package,
    below frames of the fuzzer and above xDSL's: the same for a wheel in site-packages (beside
    xDSL) as for the editable install (the repository, holding its venv)."""
    root = tmp_path / "repo" if install == "editable" else tmp_path / "site-packages/rdu_compiler"
    site = root / ".venv/site-packages" if install == "editable" else root.parent
    for package in ("", "passes"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    monkeypatch.setattr(rdu_compiler, "__file__", str(root / "__init__.py"))
    stderr = _traceback(
        root / "test/fuzz/fuzzing.py",
        root / "passes/kernels.py",
        site / "xdsl/ir/core.py",
    )
    assert _signature_of(stderr) == "KeyError at passes/kernels.py:11"


def test_failures_outside_our_code_group_by_the_innermost_frame():
    stderr = _traceback(Path("/usr/lib/python3.11/json/decoder.py"))
    assert _signature_of(stderr) == "KeyError at json/decoder.py:10"
