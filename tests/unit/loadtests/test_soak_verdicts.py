"""The soak's verdicts from its samples (pure logic of loadtests/soak.py)."""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "loadtests"))

from soak import verdicts  # noqa: E402

MiB = 2**20


def _sample(t, p99, rss, capture=1000, failed=0):
    return {"t_s": t, "requests": 100, "p50_ms": 5.0, "p99_ms": p99, "capture_bytes": capture,
            "rss": rss, "sent": 1000, "failed": failed}


def test_a_steady_gateway_passes_and_the_warmup_is_not_judged():
    samples = [_sample(60, 500.0, {"gw[1]": 100 * MiB}),            # warm-up: slow and small
               _sample(180, 40.0, {"gw[1]": 300 * MiB}), _sample(600, 50.0, {"gw[1]": 320 * MiB})]
    results = verdicts(samples, warmup_s=120, bound=10_000)
    assert [ok for _, ok, _ in results] == [True, True, True, True], results


def test_growth_p99_capture_and_failures_each_fail_their_own_verdict():
    samples = [_sample(180, 40.0, {"gw[1]": 300 * MiB, "teacher[2]": 200 * MiB}),
               _sample(600, 61.0, {"gw[1]": 301 * MiB, "teacher[2]": 221 * MiB}, capture=20_000, failed=3)]
    results = {name.split()[0]: (ok, detail) for name, ok, detail in verdicts(samples, 120, bound=10_000)}
    assert results["every"][0] is False and "teacher[2]: +10.5 %" in results["every"][1]
    assert results["last"][0] is False and "(1.52x)" in results["last"][1]
    assert results["capture"][0] is False and results["no"] == (False, "3 of 1000")


def test_too_short_a_soak_is_a_failure_not_a_pass():
    assert verdicts([_sample(180, 40.0, {"gw[1]": MiB})], 120, 10_000)[0][1] is False
