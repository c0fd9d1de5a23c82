"""The benchmarks' paired ratios and their verdicts (benchmarks/_paired.py)."""

import importlib.util
import pathlib

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "_paired.py"
_spec = importlib.util.spec_from_file_location("_paired", _PATH)
_paired = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_paired)
paired_ratio = _paired.paired_ratio


def test_median_and_interval_are_the_order_statistics_of_the_paired_ratios():
    # Ratios 0.1 ... 0.8 (paired round by round, not ratios of medians):
    # with 8 rounds the 90% interval of the median is [2nd, 7th] smallest
    # (binomial coverage 1 - 2 * 9 / 256 = 0.93).
    ours = np.arange(1, 9) * 0.1 * np.array([3, 1, 4, 1, 5, 9, 2, 6])
    anchor = np.array([3, 1, 4, 1, 5, 9, 2, 6], float)
    text, verdict = paired_ratio(list(ours), list(anchor))
    assert text == "0.45 [0.20, 0.70]"
    assert verdict == ""
    # The ratio of the medians would be another number: pairing matters.
    assert abs(np.median(ours) / np.median(anchor) - 0.45) > 0.05


@pytest.mark.parametrize("target, verdict", [(0.75, "met"), (0.7, "met"), (0.5, "within noise"),
                                             (0.15, "missed")])
def test_verdict_when_lower_is_better(target, verdict):
    ratios = [k / 10 for k in range(1, 9)]
    assert paired_ratio(ratios, [1.0] * 8, target)[1] == verdict


@pytest.mark.parametrize("target, verdict", [(0.15, "met"), (0.2, "met"), (0.5, "within noise"),
                                             (0.75, "missed")])
def test_verdict_when_higher_is_better(target, verdict):
    ratios = [k / 10 for k in range(1, 9)]
    assert paired_ratio(ratios, [1.0] * 8, target, higher_is_better=True)[1] == verdict


def test_too_few_rounds_for_an_interval_are_within_noise():
    text, verdict = paired_ratio([1.0, 1.0, 1.0, 1.0], [4.0, 4.0, 4.0, 4.0], target=0.5)
    assert (text, verdict) == ("0.25 [n/a]", "within noise")


def test_unpaired_times_are_refused():
    with pytest.raises(ValueError, match="as many numerators as denominators"):
        paired_ratio([1.0, 2.0], [1.0])


def test_the_layer_norm_benchmark_reports_each_ratio_with_the_call_floor_ceiling():
    """A tiny run of benchmarks/bench_layer_norm.py: every candidate timed,
    and the summary's one-call speed-up beside its ceiling (keras over the
    call floor) and keras over the affine pass, for each shape."""
    import re
    import subprocess
    import sys

    root = _PATH.parents[1]
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_layer_norm.py", "--shapes", "16x8,2x3x4",
         "--repeats", "5", "--chain", "2"],
        cwd=root, capture_output=True, text=True, timeout=600, check=True)
    for name in ("empty call", "call floor", "keras_ln", "keras", "affine x*g+b"):
        assert len(re.findall(rf"^    {re.escape(name)}\s+\d+\.\d+ ms", run.stdout, re.M)) >= 4
    number = r"\d+\.\d\d \[(?:\d+\.\d\d, \d+\.\d\d|n/a)\]"
    for shape in (r"\(16, 8\)", r"\(2, 3, 4\)"):
        assert re.search(rf"^  {shape}\s+fwd\+bwd: keras / keras_ln = {number} \(one call, "
                         rf"(?:met|missed|within noise); ceiling {number}; affine {number}\)",
                         run.stdout, re.M)


def test_round_orders_are_seeded_permutations_that_vary():
    names = ["empty call", "call floor", "keras_ln", "keras", "affine"]
    orders = _paired.round_orders(names, 40)
    assert len(orders) == 40 and all(sorted(o) == sorted(names) for o in orders)
    assert orders == _paired.round_orders(iter(names), 40)  # seeded; any iterable of names
    # No contender always follows the same one.
    for name in names:
        before = {o[o.index(name) - 1] for o in orders if o.index(name) > 0}
        assert len(before) > 1
