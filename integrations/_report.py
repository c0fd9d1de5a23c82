"""The comparison report: leaderboard.csv, report.md and PNG plots, written atomically.

Everything is written into a temporary sibling folder first and moved into
place only when complete, so an interrupted run never leaves a half-written
``reports/<dataset>/``.
"""

import os
import shutil
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_ln.automl import resolve_sort_metric  # noqa: E402

_COLORS = {"layer": "#1f77b4", "batch": "#ff7f0e", "none": "#7f7f7f", "h2o": "#2ca02c"}
_LABELS = {"layer": "keras_ln, layer norm", "batch": "keras_ln, batch norm", "none": "keras_ln, no norm",
           "h2o": "H2O AutoML"}


def _group(row):
    return "h2o" if row["source"] == "h2o" else row["normalization"]


def plot_metric_by_model(board, task, sort_metric, path):
    """Dot plot: CV sort metric of every model (both sources), test metric as diamonds."""
    col, descending = resolve_sort_metric(task, sort_metric)
    df = board.iloc[::-1].reset_index(drop=True)  # best at the top
    groups = [_group(r) for _, r in df.iterrows()]
    fig, ax = plt.subplots(figsize=(9.5, max(2.8, 0.3 * len(df) + 1.5)))
    y = np.arange(len(df))
    test_col = f"test_{col}"
    has_test = test_col in df and df[test_col].notna().any()
    if has_test:
        ax.hlines(y, df[col], df[test_col], color="#bbbbbb", linewidth=1, zorder=1)
        ax.scatter(df[test_col], y, color="black", marker="D", s=16, zorder=3)
    ax.scatter(df[col], y, c=[_COLORS[g] for g in groups], s=55, zorder=2, edgecolors="white")
    ax.set_yticks(y)
    ax.set_yticklabels(df["model_id"], fontsize=7)
    ax.set_ylim(-0.7, len(df) - 0.3)
    ax.set_xlabel(f"{col} ({'higher' if descending else 'lower'} is better)")
    present = [g for g in _COLORS if g in groups]
    handles = [plt.Line2D([], [], color=_COLORS[g], marker="o", linestyle="", markersize=7) for g in present]
    labels = [f"{_LABELS[g]} (CV)" for g in present]
    if has_test:
        handles.append(plt.Line2D([], [], color="black", marker="D", linestyle="", markersize=5))
        labels.append("same model on the test split")
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    ax.set_title(f"{len(df)} models ranked by cross-validated {col} (best at the top)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_normalization_folds(fold_scores, task, sort_metric, path):
    """Per-fold sort metric of the keras_ln nets grouped by normalization (+ H2O's leader)."""
    col, descending = resolve_sort_metric(task, sort_metric)
    groups = [g for g in ("layer", "batch", "none", "h2o") if (fold_scores["group"] == g).any()]
    folds = sorted(fold_scores["fold"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.0), gridspec_kw={"width_ratios": [1, 1.3]})
    ax = axes[0]
    data = [fold_scores.loc[fold_scores["group"] == g, col].dropna().to_numpy() for g in groups]
    bp = ax.boxplot(data, patch_artist=True, widths=0.55, medianprops={"color": "black"}, showfliers=False)
    for patch, g in zip(bp["boxes"], groups):
        patch.set_facecolor(_COLORS[g])
        patch.set_alpha(0.6)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=10, color="black", alpha=0.6, zorder=3)
    ax.set_xticks(range(1, len(groups) + 1))
    ax.set_xticklabels([_LABELS[g].replace("keras_ln, ", "") for g in groups], fontsize=8)
    ax.set_ylabel(f"{col} on the fold ({'higher' if descending else 'lower'} is better)")
    ax.set_title("All (model, fold) scores by normalization", fontsize=10)
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1]
    best = fold_scores.groupby(["group", "model_id"])[col].mean().reset_index()
    width = 0.8 / max(1, len(groups))
    for j, g in enumerate(groups):
        cand = best[best["group"] == g]
        if cand.empty:
            continue
        top = cand.sort_values(col, ascending=not descending).iloc[0]["model_id"]
        vals = (fold_scores[(fold_scores["group"] == g) & (fold_scores["model_id"] == top)]
                .set_index("fold")[col].reindex(folds))
        ax.bar(np.arange(len(folds)) + (j - (len(groups) - 1) / 2) * width, vals, width=width,
               color=_COLORS[g], alpha=0.85, label=f"best {_LABELS[g]}: {top}")
    ax.set_xticks(np.arange(len(folds)))
    ax.set_xticklabels([f"fold {k}" for k in folds], fontsize=8)
    vals = fold_scores[col].replace([np.inf, -np.inf], np.nan).dropna()
    if len(vals):
        lo, hi = vals.min(), vals.max()
        pad = (hi - lo) * 0.2 or 0.01
        ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    ax.set_title("Best model of each kind, fold by fold (same folds)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(curves, path):
    """Training loss per epoch of the best layer-normalized and batch-normalized nets."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for group, (model_id, curve) in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=3, color=_COLORS[group],
                label=f"{_LABELS[group]}: {model_id}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (loss_curve_)")
    ax.set_title("Learning curves of the best nets (refit on all training rows)", fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no layer- or batch-normalized net finished", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir, dataset, board, fold_scores, curves, *, task, sort_metric, markdown):
    """Write leaderboard.csv, report.md and the plots into ``out_dir/dataset`` atomically.

    Returns the final folder.
    """
    os.makedirs(out_dir, exist_ok=True)
    final = os.path.join(out_dir, dataset)
    tmp = tempfile.mkdtemp(prefix=f".{dataset}.partial-", dir=out_dir)
    try:
        board.to_csv(os.path.join(tmp, "leaderboard.csv"), index=False)
        plot_metric_by_model(board, task, sort_metric, os.path.join(tmp, "metric_by_model.png"))
        plot_normalization_folds(fold_scores, task, sort_metric, os.path.join(tmp, "normalization_folds.png"))
        plot_learning_curves(curves, os.path.join(tmp, "learning_curves.png"))
        with open(os.path.join(tmp, "report.md"), "w") as fh:
            fh.write(markdown)
        os.chmod(tmp, 0o755)
        old = None
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f".{dataset}.old-", dir=out_dir)
            os.rmdir(old)
            os.rename(final, old)
        os.rename(tmp, final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
