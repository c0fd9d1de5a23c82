"""The comparison report: leaderboard.csv, report.md and PNG plots, written atomically.

Everything is written into a temporary sibling folder first and moved into
place only when complete, so an interrupted run never leaves a half-written
``reports/<dataset>/``. report.md is for people: times read "15.3 s" or
"850 ms", metrics have four significant digits, and no number is written with
an exponent; leaderboard.csv keeps every value exactly.
"""

import math
import os
import shutil
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from keras_ln.automl import LEADERBOARD_COLUMNS, resolve_sort_metric  # noqa: E402

_TIME_COLUMNS = {"training_time_ms": "training time", "predict_time_per_row_ms": "predict time per row"}


# ---------------------------------------------------------------------------
# Numbers for people
# ---------------------------------------------------------------------------
def _missing(value):
    return value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value))


def _significant(value, digits):
    return np.format_float_positional(float(value), precision=digits, unique=False, fractional=False, trim="-")


def format_number(value, digits=4):
    """``value`` with ``digits`` significant digits and no exponent: 0.9877, 123.5, 15311, < 0.000001."""
    if _missing(value):
        return "n/a" if value is None or np.isnan(value) else str(float(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) < 1e-6:
        return "< 0.000001" if value > 0 else "> -0.000001"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:.0f}"
    return _significant(value, digits)


def format_duration_ms(ms):
    """A duration given in milliseconds, in s or ms with three significant digits: 15.3 s, 850 ms, 0.0123 ms."""
    if _missing(ms):
        return "n/a"
    ms = float(ms)
    value, unit = (ms / 1000, "s") if abs(ms) >= 999.5 else (ms, "ms")
    if value == 0:
        return f"0 {unit}"
    if abs(value) < 0.001:
        return f"< 0.001 {unit}"
    if abs(value) >= 99.95:
        return f"{value:.0f} {unit}"
    return f"{_significant(value, 3)} {unit}"


def format_table(df):
    """``df`` as a markdown table: time columns as durations (renamed without _ms), other numbers by `format_number`."""
    shown, align = pd.DataFrame(index=df.index), []
    for col in df.columns:
        if col in _TIME_COLUMNS:
            shown[_TIME_COLUMNS[col]] = [format_duration_ms(v) for v in df[col]]
        elif pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            shown[col] = [format_number(v) for v in df[col]]
        else:
            shown[col] = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in df[col]]
            align.append("left")
            continue
        align.append("right")
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)

_COLORS = {"layer": "#1f77b4", "batch": "#ff7f0e", "none": "#7f7f7f", "ensemble": "#9467bd", "baseline": "#d62728",
           "h2o": "#2ca02c"}
_LABELS = {"layer": "keras_ln, layer norm", "batch": "keras_ln, batch norm", "none": "keras_ln, no norm",
           "ensemble": "keras_ln, stacked ensemble", "baseline": "keras_ln, baseline (GLM, constant)",
           "h2o": "H2O AutoML"}
_NETS = ("layer", "batch", "none")  # keras_ln's normalization column of a net
_GLM = "Baseline_GLM"
_CONSTANT = "Baseline_constant"


def _group(row):
    if row["source"] == "h2o":
        return "h2o"
    return "baseline" if row["normalization"] == "n/a" else row["normalization"]


def _without_an_off_scale_constant(board, col, test_col):
    """The board without keras_ln's constant baseline when its CV or test value lies outside the span of the
    other models' values (by more than that span), so that it does not squeeze them into one point; and its
    CV value (None when kept)."""
    is_constant = (board["source"] == "keras_ln") & (board["model_id"] == _CONSTANT)
    cols = [c for c in (col, test_col) if c in board]
    others = board.loc[~is_constant, cols].to_numpy(dtype=float)
    others = others[np.isfinite(others)]
    if not is_constant.any() or not len(others):
        return board, None
    lo, hi = others.min(), others.max()
    span = max(hi - lo, 1e-12)
    values = board.loc[is_constant, cols].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if len(values) and (values.min() >= lo - span and values.max() <= hi + span):
        return board, None
    return board[~is_constant], float(board.loc[is_constant, col].iloc[0])


def plot_metric_by_model(board, task, sort_metric, path):
    """Dot plot: CV sort metric of every model (both sources), test metric as diamonds."""
    col, descending = resolve_sort_metric(task, sort_metric)
    test_col = f"test_{col}"
    df, off_scale = _without_an_off_scale_constant(board, col, test_col)
    df = df.iloc[::-1].reset_index(drop=True)  # best at the top
    groups = [_group(r) for _, r in df.iterrows()]
    fig, ax = plt.subplots(figsize=(9.5, max(2.8, 0.3 * len(df) + 1.5)))
    y = np.arange(len(df))
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
    ax.set_title(f"{len(df)} models ranked by cross-validated {col} (best at the top)"
                 + (f"\n{_CONSTANT}: {col} {format_number(off_scale)}, off the scale" if off_scale is not None
                    else ""), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_normalization_folds(fold_scores, task, sort_metric, path):
    """Per-fold sort metric of the keras_ln nets grouped by normalization (+ H2O's leader)."""
    col, descending = resolve_sort_metric(task, sort_metric)
    if "repeat" in fold_scores:  # the first repeat: H2O's folds
        fold_scores = fold_scores[fold_scores["repeat"].isna() | (fold_scores["repeat"] == 0)]
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
    vals = fold_scores.loc[fold_scores["group"].isin(groups), col].replace([np.inf, -np.inf], np.nan).dropna()
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


def plot_verdict(verdict, path):
    """The mean difference of every pair of normalizations with its 95% confidence interval (corrected
    resampled t-test), over all configurations and over each normalization's best configuration."""
    fig, ax = plt.subplots(figsize=(8, max(2.6, 0.55 * len(verdict) + 1.4)))
    if len(verdict):
        rows = verdict.iloc[::-1].reset_index(drop=True)
        y = np.arange(len(rows))
        colors = ["#1f77b4" if scope == "all configurations" else "#ff7f0e" for scope in rows["scope"]]
        for i, r in rows.iterrows():
            low, high = r["ci_low"], r["ci_high"]
            if np.isfinite(low) and np.isfinite(high):
                ax.hlines(i, low, high, color=colors[i], linewidth=2)
            ax.plot(r["mean_diff"], i, "o", color=colors[i])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{r['pair']} ({r['scope']}, {r['n_pairs']} pairs)" for _, r in rows.iterrows()],
                           fontsize=8)
        metric = rows["metric"].iloc[0]
        ax.set_xlabel(f"mean paired difference in {metric} (> 0: the first of the pair is better)", fontsize=8)
        ax.set_title("Normalization verdict: paired differences with 95% intervals\n(corrected resampled "
                     "t-test; an interval across 0 is no detectable difference)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "no verdict: fewer than two normalizations have finished models", ha="center",
                transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir, dataset, board, fold_scores, curves, *, task, sort_metric, markdown, verdict=None,
                 claims=None):
    """Write leaderboard.csv, report.md and the plots into ``out_dir/dataset`` atomically; with ``verdict``
    also verdict.csv and verdict.png, with ``claims`` claims.csv and a figure per claim.

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
        if verdict is not None:
            verdict.to_csv(os.path.join(tmp, "verdict.csv"), index=False)
            plot_verdict(verdict, os.path.join(tmp, "verdict.png"))
        if claims is not None:
            from keras_ln.automl import _claims

            claims.to_csv(os.path.join(tmp, "claims.csv"), index=False)
            _claims.write_figures(claims, tmp)
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


# ---------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------
def _seconds(secs):
    return format_duration_ms(None if secs is None else 1000 * secs)


def _search_line(search, nrepeats):
    """keras_ln's search in one line: configurations, the portfolio's share, pruned and failed models."""
    return (f"- keras_ln search (Optuna, TPE sampler after a portfolio of {search['portfolio']} configuration(s)): "
            f"{search['configurations']} configuration(s) asked, {search['complete']} trained under every "
            f"normalization, {search['pruned']} pruned on their first folds (worse than the median of the "
            f"finished ones; not in the leaderboard), {search['failed']} model(s) failed; "
            f"{nrepeats} repeat(s) of the folds.")


def _epochs_text(ctx):
    """How the keras_ln nets' epochs were set: searched (early stopping off, the default, or on but unable to
    run on folds this small), or by early stopping."""
    if ctx.get("epochs_searched"):
        why = ("without early stopping, the same epochs for every normalization; --early-stopping turns it on"
               if not ctx.get("early_stopping")
               else "the training folds are too small for early stopping's 50 validation rows")
        return f"the epochs searched among a quarter, half and all of max_iter={ctx['max_iter']} ({why})"
    return f"at most max_iter={ctx['max_iter']} epochs, stopped early on the loss of 10% of each training fold"


def _rows_line(ctx):
    """Which rows trained and which tested: the user's test file, or a split drawn with its size and seed."""
    if ctx.get("test_from"):
        return (f"- Rows: {ctx['n_train']} for training and cross-validation (all rows of the main file), "
                f"{ctx['n_test']} for the test split, given by the user ({ctx['test_from']}).")
    return (f"- Rows: {ctx['n_train']} for training and cross-validation, {ctx['n_test']} held out for the test "
            f"split, drawn at random (test_size={format_number(ctx['test_size'])}, seed={ctx['seed']}"
            f"{', stratified by class' if ctx['task'] != 'regression' else ''}).")


def _better(values, reference, descending):
    """Elementwise: ``values`` strictly better than ``reference`` (a NaN is not better)."""
    better = values > reference if descending else values < reference
    return better.fillna(False).astype(bool)


def nets_worse_than_glm(board, task, sort_col):
    """The keras_ln nets and ensembles whose cross-validated ``sort_col`` is worse than ``Baseline_GLM``'s.

    Returns ``(glm_value, DataFrame of those rows)``; ``glm_value`` is None when the board has no GLM row.
    """
    keras = board[board["source"] == "keras_ln"]
    glm = keras.loc[keras["model_id"] == _GLM, sort_col]
    if not len(glm) or pd.isna(glm.iloc[0]):
        return None, keras.iloc[:0]
    descending = _descending(task, sort_col)
    models = keras[keras["normalization"].isin([*_NETS, "ensemble"])]
    worse = _better(models[sort_col], glm.iloc[0], not descending)  # strictly worse: better the other way
    return float(glm.iloc[0]), models[worse]


def _descending(task, sort_col):
    return resolve_sort_metric(task, "deviance" if sort_col == "mean_residual_deviance" else sort_col)[1]


def _configuration(model_id):
    """A net's configuration, its model id less the normalization tag (``LSTM_1_none`` -> ``LSTM_1``): the
    search trains every configuration once per normalization, on the same folds with the same seed."""
    return model_id.rsplit("_", 1)[0]


def glm_shortfall_causes(board, task, sort_col):
    """What the leaderboard says about the nets worse than the GLM baseline, in sentences: for each such
    net whose configuration beats the GLM under another normalization, those twins (the same
    hyperparameters, folds and seed: the shortfall comes with the normalization, and the verdict counts it
    as its effect); for each normalization with such a net, its best net and whether that one beats the
    GLM (if none does, the comparisons with that normalization rest on nets a linear model beats)."""
    glm, worse = nets_worse_than_glm(board, task, sort_col)
    worse = worse[worse["normalization"].isin(_NETS)]  # the nets, not the ensembles
    if glm is None or not len(worse):
        return []
    descending = _descending(task, sort_col)
    nets = board[(board["source"] == "keras_ln") & board["normalization"].isin(_NETS)]
    nets = nets.assign(_configuration=nets["model_id"].map(_configuration))
    sentences = []
    for _, row in worse.iterrows():
        twins = nets[(nets["_configuration"] == _configuration(row["model_id"]))
                     & (nets["model_id"] != row["model_id"])]
        twins = twins[_better(twins[sort_col], glm, descending)]
        if len(twins):
            names = ", ".join(f"`{r['model_id']}` {format_number(r[sort_col])}" for _, r in twins.iterrows())
            sentences.append(f"`{row['model_id']}`'s configuration beats the GLM under another normalization, "
                             f"{names}: with the same hyperparameters, folds and seed, the shortfall comes "
                             f"with its normalization, and the verdict's paired scores count it as "
                             f"normalization's effect.")
        else:
            sentences.append(f"No normalization of `{row['model_id']}`'s configuration beats the GLM: the "
                             f"configuration falls short, and its pairs do not measure normalization on a net "
                             f"that learned this data.")
    for norm in [n for n in _NETS if n in set(worse["normalization"])]:
        of_norm = nets[nets["normalization"] == norm]
        best = of_norm.sort_values(sort_col, ascending=not descending).iloc[0]
        label = {"none": "without normalization", "layer": "with layer normalization",
                 "batch": "with batch normalization"}[norm]
        if _better(best[[sort_col]], glm, descending).iloc[0]:
            sentences.append(f"The best net {label}, `{best['model_id']}` ({format_number(best[sort_col])}), "
                             f"beats the GLM: the search found a configuration that trains well {label}.")
        else:
            sentences.append(f"No net {label} beats the GLM (best: `{best['model_id']}`, "
                             f"{format_number(best[sort_col])}): comparisons with {norm} rest on nets a linear "
                             f"model beats; a larger budget (--max-runtime-secs, --max-iter) may find better ones.")
    return sentences


def baseline_sentence(board, task, sort_col):
    """A warning, in words, naming the keras_ln nets (and ensembles) worse than the GLM baseline; else a
    line saying that none is."""
    glm, worse = nets_worse_than_glm(board, task, sort_col)
    if glm is None:
        return "- No GLM baseline in this leaderboard: the keras_ln models are not compared with a linear model."
    if not len(worse):
        return (f"- Every keras_ln net and ensemble is at least as good as the GLM baseline (`{_GLM}`, a regularized "
                f"linear model on the same preprocessing and folds: cross-validated {sort_col} "
                f"{format_number(glm)}).")
    n_nets = int(worse["normalization"].isin(_NETS).sum())
    who = " and ".join(part for part in (f"{n_nets} keras_ln net(s)" if n_nets else "",
                                         f"{len(worse) - n_nets} ensemble(s)" if len(worse) > n_nets else "") if part)
    names = ", ".join(f"`{r['model_id']}` ({format_number(r[sort_col])})" for _, r in worse.iterrows())
    causes = " ".join(glm_shortfall_causes(board, task, sort_col))
    return (f"> **Warning: {who} worse than the GLM baseline** (`{_GLM}`, a regularized linear model on the same "
            f"preprocessing and folds: cross-validated {sort_col} {format_number(glm)}): {names}. A net that a "
            f"linear model beats has usually not learned what this data allows (too few epochs, too small a "
            f"budget, or a poor configuration).{' ' + causes if causes else ''}")


def verdict_lines(verdict):
    """The verdict, one markdown line per pair over all configurations (then per pair of the best
    configurations), for the top of report.md and the console."""
    if verdict is None:
        return []
    if not len(verdict):
        return ["- No verdict on normalization: fewer than two normalizations have finished models."]
    lines = []
    for scope in ("all configurations", "best configuration"):
        part = verdict[verdict["scope"] == scope]
        for _, r in part.iterrows():
            p = "n/a" if pd.isna(r["p_value"]) else format_number(r["p_value"], 2)
            lines.append(f"- **{r['pair']}** ({scope}, {r['n_pairs']} paired fold scores): {r['verdict']}; "
                         f"Wilcoxon p = {p}.")
    return lines


_CLAIM_TITLES = {
    "per_example": ("Per-example statistics", "In training mode, the largest change of one example's output when "
                    "the rest of its batch is replaced (layer norm and none: 0 up to rounding; batch norm: > 0)."),
    "batch_size": ("Batch size", "The configuration refit at each batch size (capped by the data); "
                   "cross-validated metric per batch size."),
    "convergence": ("Convergence", "Epochs and seconds until the watched loss comes within 1% of its best, "
                    "median over folds (detail in claims.csv: validation or training loss)."),
    "gradient_flow": ("Recurrent stability", "Norm of the gradient of the loss with respect to the hidden state "
                      "at each time step, and the spread of the hidden states over time."),
    "overhead": ("Overhead", "Training seconds per epoch, median over folds, relative to the un-normalized net."),
}


def claims_summary(claims, claim):
    """The summary numbers of one claim: a row per quantity (and batch size), a column per normalization."""
    part = claims[(claims["claim"] == claim) & ~claims["quantity"].isin(["skipped", "failed"])]
    if claim == "gradient_flow":
        rows = []
        for quantity in ("grad_norm", "hidden_std"):
            q = part[part["quantity"] == quantity].sort_values("step")
            for label, g in q.groupby("normalization"):
                first, last = g["value"].iloc[0], g["value"].iloc[-1]
                rows += [{"quantity": f"{quantity} at the first step", "normalization": label, "value": first},
                         {"quantity": f"{quantity} at the last step", "normalization": label, "value": last}]
        part = pd.DataFrame(rows, columns=["quantity", "normalization", "value"])
        keys = ["quantity"]
    else:
        part = part[part["fold"].isna() & part["epoch"].isna()]
        keys = ["quantity", "batch_size"] if claim in ("batch_size", "per_example") else ["quantity"]
        keys = [k for k in keys if part[k].notna().any()]
    if not len(part):
        return None
    table = part.pivot_table(index=keys, columns="normalization", values="value", aggfunc="first")
    table = table[[c for c in ("layer", "batch", "none") if c in table.columns]].reset_index()
    table.columns.name = None
    return table


def claims_section(claims, ctx):
    """The "Claims" section of report.md."""
    from keras_ln.automl import _claims

    cost = claims[claims["claim"] == "cost"]["value"].sum()
    lines = ["## Claims made for layer normalization, measured on this data", "",
             f"On the best net of each normalization (keras_ln's leaderboard), on the same folds; budget "
             f"{_seconds(ctx.get('claims_budget'))}, spent {_seconds(ctx.get('claims_secs'))} "
             f"({_seconds(cost)} in the measurements). Every number is in claims.csv.", ""]
    skipped, failed = claims.attrs.get("skipped", []), claims.attrs.get("failed", [])
    if skipped:
        lines += [f"- Not measured for lack of time: {len(skipped)} unit(s) ({'; '.join(skipped[:6])}"
                  f"{'; ...' if len(skipped) > 6 else ''}).", ""]
    if failed:
        lines += [f"- Failed: {'; '.join(failed[:6])}.", ""]
    for claim, (title, text) in _CLAIM_TITLES.items():
        table = claims_summary(claims, claim)
        if table is None:
            continue
        lines += [f"### {title}", "", text, "", format_table(table), "",
                  f"![{title}]({_claims.FIGURES[claim]})", ""]
    return lines


def markdown(ctx, board, fold_scores, sort_col, *, verdict=None, claims=None):
    """The text of report.md; ``ctx`` describes the run (data, split, budgets, wall times, H2O)."""
    cv_cols = LEADERBOARD_COLUMNS[ctx["task"]][1:]
    shown = ["source", "model_id", *cv_cols, f"test_{sort_col}", "normalization", "training_time_ms"]
    h2o_time = (f"{_seconds(ctx['h2o_secs'])} ({ctx['n_h2o']} model(s))" if ctx["h2o_secs"] is not None
                else "not run (--no-h2o)")
    lines = [
        f"# keras_ln AutoML vs H2O AutoML: {ctx['dataset']}",
        "",
    ]
    if verdict is not None:
        repeats = ctx.get("nrepeats", 1)
        lines += [
            f"## Verdict on normalization (`{sort_col}`)",
            "",
            "Every configuration of keras_ln's search was trained under each normalization on the same folds "
            f"({ctx['nfolds']} folds × {repeats} repeat(s)); the differences pair up by (configuration, repeat, "
            "fold), positive when the first of the pair is better. Interval: 95%, corrected resampled t-test "
            "(Nadeau & Bengio, 2003), which widens the plain t interval for the overlap of the training sets. "
            "verdict.csv has every number.",
            "",
            *verdict_lines(verdict),
            "",
            "![verdict](verdict.png)",
            "",
            "## Run",
            "",
        ]
    lines += [
        f"- Task: **{ctx['task']}** ({ctx['task_source']}); X of shape {ctx['shape']} "
        f"({'sequences, sent to H2O flattened to T × F columns' if ctx['sequence'] else 'tabular'}).",
        _rows_line(ctx),
        f"- Folds: {ctx['nfolds']} ({'StratifiedKFold' if ctx['task'] != 'regression' else 'KFold'}, shuffled, "
        f"seed={ctx['seed']}), the same assignment for both sources (H2O's `fold_column`). "
        f"H2O's own fold assignment identical to keras_ln's: **{ctx['fold_check']}**.",
        f"- Budget per source: max_models={ctx['max_models']}, "
        f"max_runtime_secs={format_number(ctx['max_runtime_secs'])}; "
        f"keras_ln nets: {_epochs_text(ctx)}.",
        f"- Wall time: keras_ln {_seconds(ctx['keras_secs'])} ({ctx['n_keras']} model(s), stopped by "
        f"{ctx['stopped_by']}); H2O {h2o_time}.",
        f"- H2O: {ctx['h2o']}.",
        *([_search_line(ctx["search"], ctx.get("nrepeats", 1))] if ctx.get("search") else []),
        *(["- keras_ln models that failed and were skipped: "
           + "; ".join(f"`{k}` ({v[:200]})" for k, v in ctx["failed"].items())] if ctx["failed"] else []),
        "",
        baseline_sentence(board, ctx["task"], sort_col),
        "",
        f"## Leaderboard (sorted by cross-validated `{sort_col}`, like H2O's)",
        "",
        "CV columns are computed from cross-validated predictions (H2O's numbers for H2O's models, the same "
        "definitions for keras_ln's); `test_*` columns score every model, refit on all training rows, on the "
        "held-out split with one set of metric functions. All columns, unrounded, are in leaderboard.csv.",
        "",
        format_table(board[[c for c in shown if c in board.columns]]),
        "",
        "## Layer vs batch normalization across folds",
        "",
    ]
    if fold_scores is not None and len(fold_scores):
        shown_folds = fold_scores[fold_scores["group"] != "n/a"]  # not the baselines, two unlike models
        summary = (shown_folds.groupby("group")[sort_col].agg(["mean", "std", "min", "max", "count"])
                   .rename(columns={"count": "(model, fold) pairs"}).reset_index())
        lines += [f"`{sort_col}` per (model, fold) of each group (h2o: H2O's best model with holdout "
                  "predictions):", "", format_table(summary), ""]
    best = []
    for norm in (*_NETS, "ensemble"):
        cand = board[(board["source"] == "keras_ln") & (board["normalization"] == norm)]
        if len(cand):
            best.append(cand.iloc[0])
    best.extend(row for _, row in board[(board["source"] == "keras_ln") & (board["model_id"] == _GLM)].iterrows())
    h2o_rows = board[board["source"] == "h2o"]
    if len(h2o_rows):
        best.append(h2o_rows.iloc[0])
    if best:
        best = pd.DataFrame(best)[["source", "model_id", "normalization", sort_col, f"test_{sort_col}"]]
        lines += ["Best model of each kind:", "", format_table(best.infer_objects()), ""]
    if claims is not None:
        lines += claims_section(claims, ctx)
    lines += [
        "## Plots",
        "",
        "![metric of every model](metric_by_model.png)",
        "",
        "![normalization across folds](normalization_folds.png)",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Definitions",
        "",
        "Metrics as H2O defines them (`keras_ln.automl.h2o_metrics`): logloss with probabilities clipped at "
        "10⁻¹⁵; classification mse = mean (1 − p(true class))²; binary mean_per_class_error at the threshold "
        "maximizing F1; aucpr by interpolating the PR curve between thresholds; regression "
        "mean_residual_deviance = mse (gaussian). training time: the refit on all training rows "
        "(keras_ln) / H2O's reported time; predict_time_per_row_ms (leaderboard.csv) from the CV predictions "
        "(keras_ln) / H2O.",
        "",
        "keras_ln's references and ensembles, cross-validated on the same folds: `Baseline_GLM` is a logistic "
        "(classification) or ridge (regression) regression on the nets' preprocessing (sequences flattened), its "
        "regularization chosen by an inner cross-validation on each fold's training rows; `Baseline_constant` "
        "predicts the training rows' class shares or mean. They are never keras_ln's leader. "
        "`StackedEnsemble_AllModels` (every net) and `StackedEnsemble_BestOfFamily` (the best net of each "
        "normalization) average their base nets' predictions with non-negative weights summing to one, fitted "
        "on the cross-validated predictions; their CV metrics come from fitting those weights without the "
        "predicted fold, and their test metrics from the base nets refit on all training rows.",
        "",
    ]
    return "\n".join(lines)
