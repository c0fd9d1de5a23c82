"""H2O AutoML's leaderboard metrics, defined as H2O defines them.

The columns per task (`LEADERBOARD_COLUMNS`) and `h2o_metrics`, which
computes them from one set of predictions with H2O's own definitions (its
AUC and AUC-PR interpolation, the F1-optimal threshold of its binary
confusion matrix, its logloss clipping); `fold_metric` is one column on one
fold's rows. tests/integrations/test_h2o_automl.py checks them against a
real H2O run.
"""

import math

import numpy as np

# H2O AutoML's leaderboard columns (H2O 3.46, sort_metric="AUTO"), checked
# against a real H2O run in tests/integrations/test_h2o_automl.py.
LEADERBOARD_COLUMNS = {
    "binary": ["model_id", "auc", "logloss", "aucpr", "mean_per_class_error", "rmse", "mse"],
    "multiclass": ["model_id", "mean_per_class_error", "logloss", "rmse", "mse"],
    "regression": ["model_id", "rmse", "mse", "mae", "rmsle", "mean_residual_deviance"],
}

_LOGLOSS_EPS = 1e-15  # H2O clips probabilities at 1e-15 in its logloss


def _binary_curve(p1, y):
    """Cumulative TP/FP counts at each distinct threshold, from high to low."""
    order = np.argsort(-p1, kind="mergesort")
    p_sorted, y_sorted = p1[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    tps = np.cumsum(y_sorted)[distinct].astype(float)
    fps = np.cumsum(1 - y_sorted)[distinct].astype(float)
    return tps, fps


def _h2o_auc(tps, fps):
    P, N = tps[-1], fps[-1]
    if N == 0:
        return 1.0
    if P == 0:
        return 0.0
    tp0 = np.r_[0.0, tps[:-1]]
    fp0 = np.r_[0.0, fps[:-1]]
    return float(np.sum((fps - fp0) * (tps + tp0) / 2.0) / P / N)


def _h2o_aucpr(tps, fps):
    """H2O's AUC-PR: the PR curve interpolated between thresholds (XGBoost's rule)."""
    P, N = tps[-1], fps[-1]
    if N == 0:
        return 1.0
    if P == 0:
        return 0.0
    area, prevtp, prevfp = 0.0, 0.0, 0.0
    for tp, fp in zip(tps, fps):
        if tp == prevtp:
            a, b = 1.0, 0.0
        else:
            h = (fp - prevfp) / (tp - prevtp)
            a = 1.0 + h
            b = (prevfp - h * prevtp) / P
        tpp, prevtpp = tp / P, prevtp / P
        if b != 0.0:
            area += (tpp - prevtpp - b / a * (math.log(a * tpp + b) - math.log(a * prevtpp + b))) / a
        else:
            area += (tpp - prevtpp) / a
        prevtp, prevfp = tp, fp
    return float(area)


def _h2o_binary_mean_per_class_error(tps, fps):
    """Mean per-class error at the threshold maximizing F1 (H2O's default CM)."""
    P, N = tps[-1], fps[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tps / (tps + fps)
        recall = tps / P
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where(np.isnan(f1), -np.inf, f1)
    i = int(np.argmax(f1))  # first maximum, thresholds from high to low, like H2O
    errs = []
    if N > 0:
        errs.append(fps[i] / N)
    if P > 0:
        errs.append((P - tps[i]) / P)
    return float(np.mean(errs))


def h2o_metrics(task, y_true, y_pred, classes=None):
    """H2O's leaderboard metrics for one set of predictions.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    y_true : array-like of shape (n_samples,)
        Class labels (classification) or targets (regression).
    y_pred : array-like
        Classification: class probabilities of shape (n_samples, n_classes),
        columns in the order of ``classes``. Regression: predictions of shape
        (n_samples,).
    classes : array-like of shape (n_classes,), default=None
        Class labels in column order; defaults to ``np.unique(y_true)``.

    Returns
    -------
    dict
        The metric columns of ``LEADERBOARD_COLUMNS[task]`` (without model_id).

    Notes
    -----
    The definitions follow H2O's ``ModelMetricsBinomial``/``Multinomial``/
    ``Regression`` and ``AUC2``:

    - logloss: ``-mean(log(max(p_true, 1e-15)))``;
    - mse (classification): ``mean((1 - p_true)**2)``, the probability given to
      the true class; rmse its square root;
    - mean_per_class_error: mean over classes of the share of that class's rows
      predicted wrong; binary at the threshold that maximizes F1 (H2O's default
      confusion matrix), multiclass with the arg-max class;
    - auc: trapezoid over (FPR, TPR) at every distinct probability;
    - aucpr: area under the PR curve interpolated between thresholds (XGBoost's
      rule, as H2O computes it), not scikit-learn's step-wise average precision;
    - regression: rmse, mse, mae, rmsle = ``sqrt(mean((log1p(pred) - log1p(y))**2))``
      (NaN when a prediction or target is below -1), mean_residual_deviance = mse
      (gaussian).

    H2O bins the binary probabilities into at most 400 thresholds; with at most
    400 distinct probabilities the two computations agree exactly, above that
    H2O's auc/aucpr are approximations of these exact values.
    """
    if task not in LEADERBOARD_COLUMNS:
        raise ValueError(f"Expected `task` in {tuple(LEADERBOARD_COLUMNS)}. Received: task={task!r}")
    y_true = np.asarray(y_true)
    if task == "regression":
        y = y_true.astype(float).ravel()
        p = np.asarray(y_pred, dtype=float).ravel()
        if p.shape != y.shape:
            raise ValueError(f"`y_pred` has shape {p.shape}, expected {y.shape}.")
        err = p - y
        mse = float(np.mean(err**2))
        if np.any(p < -1) or np.any(y < -1):
            rmsle = float("nan")
        else:
            rmsle = float(np.sqrt(np.mean((np.log1p(p) - np.log1p(y)) ** 2)))
        return {
            "rmse": math.sqrt(mse),
            "mse": mse,
            "mae": float(np.mean(np.abs(err))),
            "rmsle": rmsle,
            "mean_residual_deviance": mse,
        }

    classes = np.unique(y_true) if classes is None else np.asarray(classes)
    proba = np.asarray(y_pred, dtype=float)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
        raise ValueError(
            f"Expected `y_pred` of shape ({len(y_true)}, {len(classes)}) "
            f"(probabilities per class). Received: shape {proba.shape}"
        )
    index = {c: i for i, c in enumerate(classes.tolist())}
    try:
        idx = np.array([index[c] for c in y_true.tolist()])
    except KeyError as exc:
        raise ValueError(f"`y_true` holds a label not in `classes`: {exc}") from None
    p_true = proba[np.arange(len(idx)), idx]
    mse = float(np.mean((1.0 - p_true) ** 2))
    out = {
        "logloss": float(-np.mean(np.log(np.maximum(_LOGLOSS_EPS, p_true)))),
        "rmse": math.sqrt(mse),
        "mse": mse,
    }
    if task == "binary":
        if len(classes) != 2:
            raise ValueError(f"task='binary' needs 2 classes. Received: {len(classes)}")
        tps, fps = _binary_curve(proba[:, 1], (idx == 1).astype(int))
        out["auc"] = _h2o_auc(tps, fps)
        out["aucpr"] = _h2o_aucpr(tps, fps)
        out["mean_per_class_error"] = _h2o_binary_mean_per_class_error(tps, fps)
    else:
        pred = np.argmax(proba, axis=1)
        present = np.unique(idx)
        out["mean_per_class_error"] = float(np.mean([np.mean(pred[idx == k] != k) for k in present]))
    return {k: out[k] for k in LEADERBOARD_COLUMNS[task][1:]}


def fold_metric(task, y, pred, classes, column):
    """One leaderboard column on one fold's rows (NaN where H2O's is
    undefined: the AUCs of a binary fold holding one class)."""
    if task == "binary" and len(np.unique(y)) < 2:
        return float("nan")
    return h2o_metrics(task, y, pred, classes if task != "regression" else None)[column]
