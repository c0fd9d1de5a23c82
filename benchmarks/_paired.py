"""Paired timing ratios with a distribution-free interval (shared by the benchmarks).

A benchmark that interleaves its contenders round by round (so that a slow
spell of this shared machine slows all of them alike) pairs their times by
round. `paired_ratio` summarizes the rounds' ratios by their median, with a
confidence interval for that median from order statistics
(`scipy.stats.quantile_test`, which assumes nothing of the times'
distribution), and judges a target by that interval.
"""

import statistics

import numpy as np
from scipy.stats import quantile_test

CONFIDENCE = 0.9


def round_orders(names, rounds, seed=0):
    """The order of `names` in each of `rounds` interleaved rounds: a seeded
    random permutation per round, so that no contender always follows the
    same one (a call right after a large multi-threaded op is slower:
    measured in bench_layer_norm.py's former fixed order, an empty call
    right after the affine pass at (4096, 1024) took 0.44-0.46 ms, the call
    floor right after the empty call 0.24 ms; TensorFlow's intra-op threads
    presumably still spin then)."""
    names = list(names)
    orders = np.random.default_rng(seed)
    return [[names[i] for i in orders.permutation(len(names))] for _ in range(rounds)]


def paired_ratio(numerators, denominators, target=None, higher_is_better=False):
    """The median of the rounds' ratios `numerators[i] / denominators[i]` and
    its `CONFIDENCE` interval, as text ("0.30 [0.27, 0.35]"), and the verdict
    against `target`: "met" where the interval lies on the target's good side
    (at or below it, or at or above it with `higher_is_better`), "missed"
    where it lies wholly on the other side, "within noise" where it contains
    the target; "" without a target.

    With fewer than 5 rounds no interval reaches 90%: it is shown as
    "[n/a]", and a target is then "within noise".
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(
            "paired_ratio needs as many numerators as denominators, at least one. "
            f"Received: {len(numerators)} and {len(denominators)}")
    ratios = [n / d for n, d in zip(numerators, denominators)]
    median = statistics.median(ratios)
    ci = quantile_test(ratios, q=median, p=0.5).confidence_interval(CONFIDENCE)
    known = bool(np.isfinite(ci.low) and np.isfinite(ci.high))
    text = f"{median:.2f} [{ci.low:.2f}, {ci.high:.2f}]" if known else f"{median:.2f} [n/a]"
    if target is None:
        return text, ""
    if higher_is_better:
        met, missed = ci.low >= target, ci.high < target
    else:
        met, missed = ci.high <= target, ci.low > target
    if known and met:
        return text, "met"
    if known and missed:
        return text, "missed"
    return text, "within noise"
