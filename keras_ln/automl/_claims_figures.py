"""The figures of the claims (`_claims`), drawn from their tidy table.

Each `plot_*` takes a table with `_claims.COLUMNS` (as `measure_claims`
returns it, or read back from claims.csv) and writes one PNG; matplotlib's
Agg canvas is used directly, so neither pyplot nor the global backend is
touched.
"""

import os


# The figure of every claim, in the order `measure_claims` runs them.
FIGURES = {
    "per_example": "per_example.png",
    "gradient_flow": "gradient_flow.png",
    "convergence": "convergence.png",
    "overhead": "overhead.png",
    "batch_size": "batch_size.png",
}

_ORDER = ("layer", "batch", "none")
_COLORS = {"layer": "tab:blue", "batch": "tab:orange", "none": "tab:gray"}
_NAMES = {"layer": "layer norm", "batch": "batch norm", "none": "no normalization"}
_INT_KEYS = ("fold", "batch_size", "step", "epoch")


def _typed(df):
    """`df` with the integer keys as nullable ints (as claims.csv reads them back: floats)."""
    df = df.copy()
    for key in _INT_KEYS:
        if key in df:
            df[key] = df[key].astype("Int64")
    df["value"] = df["value"].astype(float)
    return df


def _figure(ncols=1, width=5.5):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _rows_of(df, claim, quantity=None):
    part = df[(df["claim"] == claim) & ~df["quantity"].isin(["skipped", "failed"])]
    return part if quantity is None else part[part["quantity"] == quantity]


def _labels_in(df):
    present = set(df["normalization"].dropna())
    return [label for label in _ORDER if label in present]


def plot_per_example(df, path):
    """Bar chart of the per-example change (log scale; an exact 0 is drawn
    at the axis floor and labelled)."""
    part = _rows_of(df, "per_example", "max_abs_change")
    labels = _labels_in(part)
    values = [float(part.loc[part["normalization"] == label, "value"].iloc[0]) for label in labels]
    positive = [v for v in values if v > 0]
    floor = min(positive + [1e-12]) / 100
    fig, (ax,) = _figure()
    ax.bar([_NAMES[label] for label in labels], [max(v, floor) for v in values],
           color=[_COLORS[label] for label in labels])
    for i, v in enumerate(values):
        ax.annotate("0" if v == 0 else f"{v:.2g}", (i, max(v, floor)), ha="center", va="bottom")
    ax.set_yscale("log")
    ax.set_ylabel("largest change of an example's output")
    ax.set_title("Per-example statistics: the rest of the batch replaced\n(training mode, dropout off)", fontsize=10)
    fig.savefig(path, dpi=100)


def plot_batch_size(df, path):
    """Cross-validation metric against the batch size, per normalization,
    with the per-fold values as points."""
    part = _rows_of(df, "batch_size")
    part = part[part["quantity"].isin(set(part.loc[part["detail"].notna(), "quantity"]))]
    fig, (ax,) = _figure()
    metric = part["quantity"].iloc[0] if len(part) else ""
    for label in _labels_in(part):
        mine = part[part["normalization"] == label]
        cv = mine[mine["fold"].isna()].sort_values("batch_size")
        per_fold = mine[mine["fold"].notna()]
        ax.plot(cv["batch_size"].astype(float), cv["value"], "o-", color=_COLORS[label], label=_NAMES[label])
        ax.plot(per_fold["batch_size"].astype(float), per_fold["value"], ".", color=_COLORS[label], alpha=0.4)
    ax.set_xscale("log", base=2)
    sizes = sorted({int(b) for b in part["batch_size"].dropna()})
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"cross-validation {metric}" + (f" ({part['detail'].iloc[0]})" if len(part) else ""))
    ax.set_title("Batch size: cross-validation metric (points: folds)", fontsize=10)
    ax.legend()
    fig.savefig(path, dpi=100)


def plot_convergence(df, path):
    """Learning curves: median over folds, band from the lowest to the
    highest fold, and the median epoch of convergence as a dashed line."""
    part = _rows_of(df, "convergence")
    curves = part[part["epoch"].notna()]
    fig, (ax,) = _figure()
    for label in _labels_in(curves):
        mine = curves[curves["normalization"] == label]
        table = mine.pivot_table(index="epoch", columns="fold", values="value")
        epochs = table.index.astype(float)
        ax.plot(epochs, table.median(axis=1), color=_COLORS[label], label=_NAMES[label])
        ax.fill_between(epochs, table.min(axis=1), table.max(axis=1), color=_COLORS[label], alpha=0.2)
        best = part[(part["normalization"] == label) & (part["quantity"] == "epochs_to_best")
                    & part["fold"].isna()]
        if len(best):
            ax.axvline(float(best["value"].iloc[0]), color=_COLORS[label], linestyle="--", alpha=0.7)
    names = sorted(set(curves["quantity"]))
    ax.set_xlabel("epoch")
    ax.set_ylabel(" / ".join(name.replace("_", " ") for name in names))
    ax.set_yscale("log")
    ax.set_title("Convergence: median over folds, band min-max;\ndashed: first epoch within 1% of the best (median)", fontsize=10)
    ax.legend()
    fig.savefig(path, dpi=100)


def plot_gradient_flow(df, path):
    """Gradient norm against steps before the last (log scale), and the
    spread of the hidden states over time."""
    part = _rows_of(df, "gradient_flow")
    fig, (left, right) = _figure(ncols=2)
    for label in _labels_in(part):
        mine = part[part["normalization"] == label]
        grads = mine[mine["quantity"] == "grad_norm"].sort_values("step")
        spread = mine[mine["quantity"] == "hidden_std"].sort_values("step")
        last = float(grads["step"].max())
        left.plot(last - grads["step"].astype(float), grads["value"], "o-", markersize=3, color=_COLORS[label],
                  label=_NAMES[label])
        right.plot(spread["step"].astype(float), spread["value"], "o-", markersize=3, color=_COLORS[label],
                   label=_NAMES[label])
    left.set_yscale("log")
    left.set_xlabel("steps before the last")
    left.set_ylabel("mean ||dL / dh_t||")
    left.set_title("Gradient flow along the sequence", fontsize=10)
    left.legend()
    right.set_xlabel("time step")
    right.set_ylabel("std of h_t over units and sequences")
    right.set_title("Hidden-state spread over time", fontsize=10)
    fig.savefig(path, dpi=100)


def plot_overhead(df, path):
    """Bar chart of the training seconds per epoch relative to none."""
    part = _rows_of(df, "overhead")
    relative = part[part["quantity"] == "relative_to_none"]
    use = relative if len(relative) else part[(part["quantity"] == "seconds_per_epoch") & part["fold"].isna()]
    labels = _labels_in(use)
    values = [float(use.loc[use["normalization"] == label, "value"].iloc[0]) for label in labels]
    fig, (ax,) = _figure()
    ax.bar([_NAMES[label] for label in labels], values, color=[_COLORS[label] for label in labels])
    for i, v in enumerate(values):
        ax.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom")
    ax.set_ylabel("seconds per epoch" + (" / no normalization's" if len(relative) else ""))
    ax.set_title("Training time per epoch (median over folds)", fontsize=10)
    fig.savefig(path, dpi=100)


_PLOTS = {
    "per_example": plot_per_example,
    "gradient_flow": plot_gradient_flow,
    "convergence": plot_convergence,
    "overhead": plot_overhead,
    "batch_size": plot_batch_size,
}


def write_figures(df, out_dir):
    """Write the figure of every claim that has numbers in `df` (a table from
    this module or read back from claims.csv); returns the paths written."""
    if "fold" in df and df["fold"].dtype != "Int64":
        df = _typed(df)
    written = []
    for claim, plot in _PLOTS.items():
        if len(_rows_of(df, claim)):
            path = os.path.join(out_dir, FIGURES[claim])
            plot(df, path)
            written.append(path)
    return written
