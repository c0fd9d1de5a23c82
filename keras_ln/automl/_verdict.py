"""The normalization verdict: paired statistics over cross-validated scores.

Every configuration of the search is trained under each normalization on the
same folds, so the scores of two normalizations pair up by (configuration,
repeat, fold). For each pair of normalizations this module reports the mean
difference of the sort metric, a 95% confidence interval by the corrected
resampled t-test of Nadeau & Bengio (2003), and a Wilcoxon signed-rank
p-value (scipy).

Why the correction: the training sets of k-fold cross-validation overlap,
so the per-fold differences are correlated and the plain paired t-test's
variance `s**2 / J` is too small. Nadeau & Bengio replace it by
`(1 / J + n_test / n_train) * s**2`, with `n_test / n_train = 1 / (k - 1)`
for k folds.

Differences are signed so that a positive `mean_diff` means the FIRST
normalization of the pair is better (larger AUC, smaller error).

Reference: C. Nadeau and Y. Bengio, "Inference for the Generalization
Error", Machine Learning 52, 239-281 (2003).
"""

import numpy as np
import pandas as pd
from scipy import stats

VERDICT_COLUMNS = ["pair", "metric", "scope", "mean_diff", "ci_low", "ci_high", "p_value", "n_pairs", "verdict"]
PAIRS = (("layer", "batch"), ("layer", "none"), ("batch", "none"))
_NAMES = {"layer": "layer norm", "batch": "batch norm", "none": "no normalization"}


def corrected_t_interval(diffs, test_train_ratio, confidence=0.95):
    """Mean of `diffs` and its corrected resampled t confidence interval.

    Args:
        diffs: paired differences, one per (configuration, repeat, fold).
        test_train_ratio: n_test / n_train of one fold (1 / (k - 1)).
        confidence: coverage of the interval.

    Returns:
        `(mean, low, high)`; the interval is `(mean, mean)` when every
        difference is equal, and NaN with fewer than two differences.
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan")
    variance = (1.0 / n + test_train_ratio) * d.var(ddof=1)
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * np.sqrt(variance)
    return mean, float(mean - half), float(mean + half)


def wilcoxon_p(diffs):
    """Two-sided Wilcoxon signed-rank p-value of `diffs` (1.0 when every
    difference is zero, NaN with none)."""
    d = np.asarray(diffs, dtype=float)
    if not len(d):
        return float("nan")
    if np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def sentence(first, second, metric, mean, low, high):
    """The plain-language verdict of one pair."""
    if not np.isfinite(low) or not np.isfinite(high) or low <= 0 <= high:
        return (f"no detectable difference between {_NAMES[first]} and {_NAMES[second]} "
                f"({metric}, 95% CI [{low:.3g}, {high:.3g}])")
    better, worse = (first, second) if mean > 0 else (second, first)
    return (f"{_NAMES[better]} better than {_NAMES[worse]} by {abs(mean):.3g} {metric}, "
            f"95% CI [{min(abs(low), abs(high)):.3g}, {max(abs(low), abs(high)):.3g}]")


def _signed(scores, descending):
    """Scores turned so that larger is better."""
    return scores if descending else -scores


def _rows(table, first, second, metric, descending, ratio, scope):
    """One verdict row from a table indexed by pairing keys, with a column
    per normalization."""
    if first not in table or second not in table:
        return None
    both = table[[first, second]].dropna()
    diffs = _signed(both[first], descending) - _signed(both[second], descending)
    mean, low, high = corrected_t_interval(diffs.to_numpy(), ratio)
    return {
        "pair": f"{first}-{second}",
        "metric": metric,
        "scope": scope,
        "mean_diff": mean,
        "ci_low": low,
        "ci_high": high,
        "p_value": wilcoxon_p(diffs.to_numpy()),
        "n_pairs": len(diffs),
        "verdict": sentence(first, second, metric, mean, low, high),
    }


def verdict(fold_scores, metric, descending, nfolds, pairs=PAIRS):
    """The verdict table of every pair of normalizations.

    Args:
        fold_scores: DataFrame with columns `config` (the configuration a
            model was trained from), `normalization` ("layer", "batch",
            "none"), `repeat`, `fold` and `metric`.
        metric: the score column (the leaderboard's sort metric).
        descending: whether larger scores are better.
        nfolds: folds per repeat (for the test/train ratio 1 / (k - 1)).
        pairs: the pairs of normalizations to compare.

    Returns:
        DataFrame with `VERDICT_COLUMNS`: per pair, scope "all
        configurations" (every configuration trained under both) and
        "best configuration" (each normalization's best configuration by its
        mean score, paired by repeat and fold).
    """
    ratio = 1.0 / (nfolds - 1)
    scores = fold_scores.dropna(subset=[metric])
    all_configs = scores.pivot_table(index=["config", "repeat", "fold"], columns="normalization",
                                     values=metric, aggfunc="first")
    means = scores.groupby(["normalization", "config"])[metric].mean()
    best = {}
    for norm, per_config in means.groupby(level=0):
        per_config = per_config.droplevel(0)
        best[norm] = per_config.idxmax() if descending else per_config.idxmin()
    best_scores = scores[[best.get(n) == c for n, c in zip(scores["normalization"], scores["config"])]]
    best_table = best_scores.pivot_table(index=["repeat", "fold"], columns="normalization", values=metric,
                                         aggfunc="first")
    rows = []
    for first, second in pairs:
        for table, scope in ((all_configs, "all configurations"), (best_table, "best configuration")):
            row = _rows(table, first, second, metric, descending, ratio, scope)
            if row is not None:
                rows.append(row)
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)
