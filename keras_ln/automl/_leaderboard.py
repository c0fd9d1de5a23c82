"""Sorting a leaderboard as H2O does (`sort_metric`), and its columns."""

from keras_ln.automl._metrics import LEADERBOARD_COLUMNS

# keras_ln's columns after H2O's.
EXTRA_COLUMNS = ["normalization", "training_time_ms", "predict_time_per_row_ms"]

# sort_metric values H2O accepts per task ("deviance" is mean_residual_deviance).
SORT_METRICS = {
    "binary": ("auc", "aucpr", "logloss", "mean_per_class_error", "rmse", "mse"),
    "multiclass": ("mean_per_class_error", "logloss", "rmse", "mse"),
    "regression": ("deviance", "rmse", "mse", "mae", "rmsle"),
}
# H2O's sort_metric="AUTO": AUC (binary), mean_per_class_error (multinomial),
# deviance (regression).
_AUTO_SORT = {"binary": "auc", "multiclass": "mean_per_class_error", "regression": "mean_residual_deviance"}
_DESCENDING = {"auc", "aucpr"}

__all__ = ["EXTRA_COLUMNS", "LEADERBOARD_COLUMNS", "SORT_METRICS", "resolve_sort_metric", "sort_leaderboard"]


def resolve_sort_metric(task, sort_metric="AUTO"):
    """The leaderboard column H2O sorts by, and whether larger is better."""
    if sort_metric is None or str(sort_metric).upper() == "AUTO":
        col = _AUTO_SORT[task]
    else:
        name = str(sort_metric).lower()
        if name not in SORT_METRICS[task]:
            raise ValueError(
                f"Expected `sort_metric` to be 'AUTO' or one of {SORT_METRICS[task]} for a "
                f"{task} task. Received: sort_metric={sort_metric!r}"
            )
        col = "mean_residual_deviance" if name == "deviance" else name
    return col, col in _DESCENDING


def sort_leaderboard(df, task, sort_metric="AUTO"):
    """Sort a leaderboard like H2O: best first by the sort metric, NaN last."""
    col, descending = resolve_sort_metric(task, sort_metric)
    return df.sort_values(col, ascending=not descending, kind="mergesort", na_position="last").reset_index(
        drop=True
    )
