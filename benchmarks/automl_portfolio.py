"""How keras_ln.automl's portfolio (`_search.PORTFOLIO`) was chosen: candidates across the bundled sets.

Every candidate configuration of a family is cross-validated by `AutoML`
itself (3 folds, seed 0, every normalization, pruning off: the candidates are
enqueued as the study's portfolio) on every bundled data set of that family:

- MLP: breast_cancer, wine, digits, diabetes;
- RNN: sequential_digits, adding_problem (1000 sequences of 50 steps).

A candidate's score on a set is its mean CV sort metric over the
normalizations shared by all candidates (MLP: all three, as in the search's
objective; RNN: "layer" and None, since a GRU has no batch-normalized
variant). Scores become ranks among the candidates per set,
and the candidates are listed by mean rank over the sets, worst set rank
next: the portfolio takes the first few of that list. A greedy "best of
the portfolio on each set" construction (auto-sklearn's) was tried and
dropped: with differences this small it collects each set's winner, a
configuration tuned to one set. A candidate with a failed model on a set
ranks last there. Regression targets are standardized here (the estimators
may not do it themselves) so that no candidate wins by merely reaching the
target's scale.

    python benchmarks/automl_portfolio.py [--family mlp|rnn] [--max-iter 100] [--out results.csv]
        [--early-stopping] [--held-out] [--candidates 2 6 7 ...]

`--early-stopping` trains as the AutoML does by default (the first round ran without); `--held-out` also
evaluates the `HELD_OUT` sets, never used to choose, and ranks the candidates on them apart. Every set's
GLM baseline (`Baseline_GLM`, same folds) is printed next to the candidates. The RNN portfolio's second round:

    python benchmarks/automl_portfolio.py --family rnn --max-iter 50 --early-stopping --held-out \
        --candidates 2 6 7 8 9 10 11   # about 14 minutes on 2 cores

Not a `bench_*.py` (`make bench` does not run it): it takes about an hour on
2 CPU cores.
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from keras_ln import datasets  # noqa: E402
from keras_ln.automl import AutoML  # noqa: E402
from keras_ln.automl import _search  # noqa: E402

CANDIDATES = {
    "mlp": [
        {"depth": 1, "width": 256, "learning_rate_init": 1e-3, "dropout": 0.1, "batch_size": 32, "alpha": 1e-4},
        {"depth": 2, "width": 128, "learning_rate_init": 1e-3, "dropout": 0.2, "batch_size": 32, "alpha": 1e-4},
        {"depth": 2, "width": 256, "learning_rate_init": 3e-3, "dropout": 0.3, "batch_size": 64, "alpha": 1e-3},
        {"depth": 1, "width": 64, "learning_rate_init": 3e-3, "dropout": 0.0, "batch_size": 32, "alpha": 1e-4},
        {"depth": 3, "width": 128, "learning_rate_init": 1e-3, "dropout": 0.1, "batch_size": 64, "alpha": 1e-5},
        {"depth": 2, "width": 512, "learning_rate_init": 3e-4, "dropout": 0.3, "batch_size": 32, "alpha": 1e-4},
        {"depth": 1, "width": 512, "learning_rate_init": 1e-2, "dropout": 0.5, "batch_size": 128, "alpha": 1e-3},
        {"depth": 2, "width": 64, "learning_rate_init": 1e-2, "dropout": 0.1, "batch_size": 128, "alpha": 1e-4},
        # a second round, after the first showed every candidate overfitting diabetes: heavier weight decay
        {"depth": 1, "width": 128, "learning_rate_init": 1e-3, "dropout": 0.3, "batch_size": 32, "alpha": 0.1},
        {"depth": 2, "width": 256, "learning_rate_init": 3e-4, "dropout": 0.3, "batch_size": 32, "alpha": 0.3},
        {"depth": 1, "width": 256, "learning_rate_init": 1e-3, "dropout": 0.1, "batch_size": 32, "alpha": 1.0},
        {"depth": 2, "width": 128, "learning_rate_init": 1e-3, "dropout": 0.2, "batch_size": 16, "alpha": 0.03},
    ],
    "rnn": [
        {"depth": 1, "units": 64, "cell": "lstm", "bidirectional": False, "learning_rate_init": 3e-3,
         "dropout": 0.0, "batch_size": 32, "alpha": 1e-4},
        {"depth": 1, "units": 64, "cell": "gru", "bidirectional": False, "learning_rate_init": 3e-3,
         "dropout": 0.0, "batch_size": 32, "alpha": 1e-4},
        {"depth": 1, "units": 32, "cell": "lstm", "bidirectional": True, "learning_rate_init": 3e-3,
         "dropout": 0.1, "batch_size": 32, "alpha": 1e-4},
        {"depth": 2, "units": 64, "cell": "lstm", "bidirectional": False, "learning_rate_init": 1e-3,
         "dropout": 0.1, "batch_size": 64, "alpha": 1e-4},
        {"depth": 1, "units": 128, "cell": "gru", "bidirectional": True, "learning_rate_init": 1e-3,
         "dropout": 0.0, "batch_size": 64, "alpha": 1e-4},
        {"depth": 1, "units": 128, "cell": "lstm", "bidirectional": False, "learning_rate_init": 1e-2,
         "dropout": 0.0, "batch_size": 128, "alpha": 1e-4},
        # a second round, with early stopping on (the AutoML's default), after LSTM_1 (candidate 6) trained
        # under layer normalization and none had cross-validated worse than the GLM on sequential_digits:
        # weight decay (the RNN space had none) and a lower step size
        {"depth": 1, "units": 128, "cell": "lstm", "bidirectional": False, "learning_rate_init": 3e-3,
         "dropout": 0.0, "batch_size": 64, "alpha": 1e-4},
        {"depth": 1, "units": 128, "cell": "lstm", "bidirectional": False, "learning_rate_init": 1e-2,
         "dropout": 0.0, "batch_size": 128, "alpha": 0.1},
        {"depth": 1, "units": 64, "cell": "lstm", "bidirectional": False, "learning_rate_init": 3e-3,
         "dropout": 0.0, "batch_size": 32, "alpha": 0.1},
        {"depth": 1, "units": 64, "cell": "gru", "bidirectional": False, "learning_rate_init": 3e-3,
         "dropout": 0.0, "batch_size": 32, "alpha": 0.1},
        {"depth": 2, "units": 64, "cell": "lstm", "bidirectional": False, "learning_rate_init": 3e-3,
         "dropout": 0.2, "batch_size": 64, "alpha": 0.01},
    ],
}
SETS = {"mlp": ["breast_cancer", "wine", "digits", "diabetes"], "rnn": ["sequential_digits", "adding_problem"]}
# Sets the portfolio is checked on, never chosen on (`--held-out`): their ranks are printed apart.
HELD_OUT = {
    "mlp": {},
    "rnn": {"ragged_sequences": dict(n_samples=1200, noise=1.0, random_state=1)},
}


class _CandidatesOnly(AutoML):
    """AutoML that trains the enqueued candidates only: every later configuration fails at once, and
    the search stops after ten of them (a failed model does not count towards max_models, so a
    max_models budget would go on to sample configurations)."""

    BEYOND = "ValueError: not a candidate"

    def _train_one(self, X, y, splits, family, classification, model_id, *args):
        if int(model_id.split("_")[1]) > self.n_candidates:
            raise ValueError("not a candidate")
        return super()._train_one(X, y, splits, family, classification, model_id, *args)


def evaluate(family, name, max_iter, numbers, nfolds=3, seed=0, early_stopping=False):
    """One row per (candidate, normalization), and one for the GLM baseline (candidate 0): the CV sort
    metric on data set `name`.

    `numbers`: the candidates evaluated (1-based positions in CANDIDATES[family]).
    """
    candidates = [CANDIDATES[family][i - 1] for i in numbers]
    X, y, task = datasets.load(name, **HELD_OUT[family].get(name, {}))
    if task == "regression":
        y = (y - y.mean()) / y.std()
    norms = ("layer", "batch", None)
    saved = _search.PORTFOLIO[family], _search.PRUNE_AFTER_CONFIGURATIONS
    _search.PORTFOLIO[family], _search.PRUNE_AFTER_CONFIGURATIONS = candidates, 10**9
    try:
        t0 = time.perf_counter()
        aml = _CandidatesOnly(nfolds=nfolds, seed=seed, max_iter=max_iter, early_stopping=early_stopping,
                              normalizations=norms)
        aml.n_candidates = len(candidates)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            aml.fit(X, y, task=task)
        secs = time.perf_counter() - t0
    finally:
        _search.PORTFOLIO[family], _search.PRUNE_AFTER_CONFIGURATIONS = saved
    col = aml.leaderboard.columns[1]
    rows = []
    nets = aml.leaderboard[aml.leaderboard["normalization"].isin(["layer", "batch", "none"])]
    for _, r in nets.iterrows():
        number = numbers[int(r["model_id"].split("_")[1]) - 1]
        rows.append({"dataset": name, "candidate": number, "normalization": r["normalization"],
                     "metric": col, "value": r[col], "logloss": r.get("logloss", np.nan),
                     "fit_ms": r["training_time_ms"]})
    glm = aml.leaderboard[aml.leaderboard["model_id"] == "Baseline_GLM"]
    for _, r in glm.iterrows():
        rows.append({"dataset": name, "candidate": 0, "normalization": "glm", "metric": col, "value": r[col],
                     "logloss": r.get("logloss", np.nan), "fit_ms": r["training_time_ms"]})
    failed = {m: e for m, e in aml.failed_.items() if e != _CandidatesOnly.BEYOND}
    print(f"{family} {name}: {len(rows)} models in {secs:.0f} s; failed: {failed or 'none'}", flush=True)
    return rows


def rank(df):
    """Mean rank of every candidate over the data sets (score: mean over the normalizations all candidates have)."""
    df = df[df["candidate"] > 0]  # not the GLM
    per_norm = df.groupby("normalization")["candidate"].nunique()
    shared = df[df["normalization"].isin(per_norm.index[per_norm == df["candidate"].nunique()])]
    score = shared.groupby(["dataset", "candidate"])["value"].mean().unstack("dataset")
    # a candidate with a failed model (missing row) on a set ranks last there
    n = shared.groupby(["dataset", "candidate"])["value"].count().unstack("dataset")
    score = score.where(n == n.max())
    higher = {d: m in ("auc", "aucpr") for d, m in df.groupby("dataset")["metric"].first().items()}
    ranks = pd.DataFrame({d: score[d].rank(ascending=not higher[d], na_option="bottom") for d in score.columns})
    out = score.copy()
    out["mean_rank"], out["worst_rank"] = ranks.mean(axis=1), ranks.max(axis=1)
    bn = df[df["normalization"] == "batch"].groupby(["dataset", "candidate"])["value"].mean().unstack("dataset")
    for d in bn.columns:
        out[f"{d}_BN"] = bn[d]
    return out.sort_values(["mean_rank", "worst_rank"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=["mlp", "rnn"], nargs="+", default=["mlp", "rnn"])
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--datasets", nargs="+", default=None, help="a subset of the family's sets")
    p.add_argument("--candidates", type=int, nargs="+", default=None, help="their numbers (default: all)")
    p.add_argument("--out", default=None, help="also write the per-model results to this CSV")
    p.add_argument("--previous", nargs="+", default=(), help="CSVs of earlier runs, ranked together with this one")
    p.add_argument("--early-stopping", action="store_true", help="as the AutoML's default (the first round: off)")
    p.add_argument("--held-out", action="store_true", help="also the HELD_OUT sets, ranked apart")
    args = p.parse_args()
    rows = []
    previous = pd.concat([pd.read_csv(f) for f in args.previous]) if args.previous else None
    for family in args.family:
        fam_rows = []
        numbers = args.candidates or range(1, len(CANDIDATES[family]) + 1)
        names = SETS[family] + (list(HELD_OUT[family]) if args.held_out else [])
        for name in names:
            if args.datasets is None or name in args.datasets:
                fam_rows += evaluate(family, name, args.max_iter, list(numbers), early_stopping=args.early_stopping)
                if args.out:  # as it goes: an hour's results survive a failure
                    pd.DataFrame(rows + [{**r, "family": family} for r in fam_rows]).to_csv(args.out, index=False)
        df = pd.DataFrame(fam_rows)
        if previous is not None:
            df = pd.concat([previous[previous["family"] == family].drop(columns="family"), df], ignore_index=True)
        rows += [{**r, "family": family} for r in fam_rows]
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
            chosen_on = df[~df["dataset"].isin(list(HELD_OUT[family]))]
            print(f"\n{family}: candidates by mean rank over the sets (value: mean over the shared normalizations)")
            print(rank(chosen_on))
            held = df[df["dataset"].isin(list(HELD_OUT[family]))]
            if len(held):
                print(f"\n{family}, held-out sets (not used to choose):")
                print(rank(held))
            print("\nper normalization (the GLM baseline as 'glm'):")
            print(df.pivot_table(index=["candidate"], columns=["dataset", "normalization"], values="value"))
            for i, c in enumerate(CANDIDATES[family], 1):
                print(f"  candidate {i}: {c}")
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
