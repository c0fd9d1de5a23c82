"""The fold assignment both AutoMLs share."""

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold


def make_folds(y, task, nfolds=5, seed=None):
    """Fold index of every row: StratifiedKFold (classification) or KFold, shuffled with seed."""
    if not isinstance(nfolds, (int, np.integer)) or nfolds < 2:
        raise ValueError(f"Expected `nfolds` to be an int >= 2. Received: nfolds={nfolds!r}")
    y = np.asarray(y)
    cv_cls = KFold if task == "regression" else StratifiedKFold
    cv = cv_cls(n_splits=nfolds, shuffle=True, random_state=seed)
    folds = np.empty(len(y), dtype=int)
    for k, (_, test) in enumerate(cv.split(np.zeros((len(y), 1)), y)):
        folds[test] = k
    return folds
