"""A seeded fuzzing budget in CI: mutated IR (every stage), config.json files, program files and
command lines through the real tools; every case ends in exit 0 or a refusal, never a
traceback, hang, crash or changed output file (`fuzzing.py` says what each outcome means; run
it directly for longer campaigns)."""

from __future__ import annotations

from fuzzing import FAILURES, run_campaign

CASES = 200
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
