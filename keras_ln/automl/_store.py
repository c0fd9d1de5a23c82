"""The search's persistent store: every finished model committed to Optuna's storage the moment it finishes.

`AutoML(storage=...)` keeps its study in Optuna's RDB storage (a SQLAlchemy
URL: ``sqlite:///path/study.db`` by default in the CLI, or PostgreSQL/MySQL
for a shared database). Besides Optuna's own records (the trials, their
parameters, states, values and the pruner's intermediate values), each trial
carries, as user attributes, the results of its models, written as each
model finishes:

- ``model:<model_id>``: the leaderboard row, the per-fold scores (every
  repeat), the estimator parameters and the cross-validated predictions
  (exact float64, base64), and, with ``refit="all"``, the pickled refit;
- ``failed:<model_id>``: the error of a model whose training failed;
- ``pruned``: why the pruner stopped the configuration;
- ``configuration``: the configuration's number (model ids ``MLP_<n>_LN``).

The study's own user attributes hold the data's fingerprint (X, y, folds,
task and the settings that change results), the seconds spent so far, and,
once the search has ended, why (``stopped_by``).

A resumed run (`open_study` with ``resume=True``) reads all of that back:
finished models are not trained again; a trial left RUNNING by a killed
process is marked abandoned (FAIL) and its configuration re-enqueued under
the same number, so that the models it had not finished are trained; the
budget counts the seconds already spent. The sampler gives configuration
k the portfolio's entry k, and is reseeded from the seed and the
configuration's number before each later one
(`_search.ConfigurationSampler`), and abandoned trials are invisible to it and to the pruner,
so a killed-and-resumed run with a fixed seed asks the same configurations
as an uninterrupted one.

MySQL's TEXT columns hold 64 KiB: user attributes larger than that (the
cross-validated predictions of a large data set, a refit net) need
SQLite or PostgreSQL.
"""

import base64
import hashlib
import io
import pickle
import time
import warnings

import numpy as np
import optuna
import pandas as pd

from keras_ln.automl._leaderboard import sort_leaderboard

MODEL = "model:"
# Optuna's heartbeat: a process records one every HEARTBEAT_SECS for the trial it trains; a RUNNING trial
# without one for GRACE_SECS belongs to a process that died.
HEARTBEAT_SECS = 10
GRACE_SECS = 60
FAILED = "failed:"
_STATES_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)

__all__ = ["fingerprint", "load_leaderboard", "open_study"]


def _array_to_text(a):
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _array_from_text(text):
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def _plain(value):
    """A JSON-able copy of a leaderboard or fold row (numpy scalars as Python numbers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def fingerprint(X, y, folds, settings):
    """A SHA-256 of the data (X, y), the fold assignment of every repeat and ``settings`` (a dict of the
    parameters that change results), to refuse resuming a study with other data."""
    h = hashlib.sha256()
    if isinstance(X, pd.DataFrame):
        h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
        h.update(repr(list(X.columns)).encode())
        h.update(repr([str(t) for t in X.dtypes]).encode())
    else:
        X = np.ascontiguousarray(X)
        h.update(repr((X.shape, str(X.dtype))).encode())
        h.update(X.tobytes())
    y = np.asarray(y)
    h.update(repr((y.shape, str(y.dtype))).encode())
    h.update(np.ascontiguousarray(y).tobytes() if y.dtype.kind in "biuf" else repr(y.tolist()).encode())
    h.update(np.ascontiguousarray(folds, dtype=np.int64).tobytes())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()


def _begin_immediate(engine):
    """Make every transaction on a SQLite ``engine`` take the database's write lock when it begins.

    Optuna claims a queued trial by reading its state and then setting it to
    RUNNING, counting on ``SELECT ... FOR UPDATE`` to lock the row; SQLite
    ignores that, and Python's sqlite3 begins a transaction only at its first
    write, so two processes could both read WAITING and both run the same
    trial. ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for serializable SQLite)
    makes the read and the write one atomic step.
    """
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners would not have them


class _Storage(optuna.storages.RDBStorage):
    """Optuna's RDB storage; on SQLite, with transactions that lock the database as they begin."""

    def __init__(self, url, **kwargs):
        super().__init__(url, **kwargs)
        if self.engine.name == "sqlite":
            _begin_immediate(self.engine)

    def __setstate__(self, state):  # unpickled (e.g. in a Dask worker): a new engine, the same locking
        super().__setstate__(state)
        if self.engine.name == "sqlite":
            _begin_immediate(self.engine)


def rdb_storage(url):
    """Optuna's RDB storage for ``url``, with heartbeats (an existing storage object is returned as is)."""
    if not isinstance(url, str):
        return url
    import sqlalchemy.exc

    for attempt in range(20):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return _Storage(url, heartbeat_interval=HEARTBEAT_SECS, grace_period=GRACE_SECS,
                                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            # Processes opening a new database at once race to create Optuna's tables; the loser retries.
            if attempt == 19:
                raise
            time.sleep(0.1 * (attempt + 1))


def count_models(study):
    """The models the study has finished, over every process working on it."""
    return sum(1 for t in study.get_trials(deepcopy=False) for k in t.user_attrs if k.startswith(MODEL))


def open_study(storage, study_name, direction, sampler, pruner, data_fingerprint, resume):
    """The study: new, or resumed. ``resume`` False deletes an existing study of that name first, True
    requires one (and abandons every trial it left running), "auto" continues or joins one if it exists
    (abandoning only the trials whose process stopped sending heartbeats).

    Resuming checks ``data_fingerprint`` against the stored one (ValueError
    on a mismatch) and marks the trials a killed process left RUNNING as
    abandoned (FAIL); their parameters are returned, in order, to be asked
    again under the same configuration number.

    Returns:
        ``(study, abandoned)``: abandoned is a list of ``(configuration, params, user_attrs)``.
    """
    if storage is None:
        study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner, study_name=study_name)
        study.set_user_attr("fingerprint", data_fingerprint)
        return study, []
    storage = rdb_storage(storage)
    exists = study_name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if resume is True and not exists:
        raise ValueError(f"Cannot resume study {study_name!r}: the storage holds no study of that name. "
                         "Start it without resume (or with resume='auto').")
    if exists and resume is False:
        optuna.delete_study(study_name=study_name, storage=storage)
        exists = False
    if not exists:
        try:
            study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner, study_name=study_name,
                                        storage=storage)
        except optuna.exceptions.DuplicatedStudyError:  # another process created it just now: join it
            if resume is False:
                raise
        else:
            study.set_user_attr("fingerprint", data_fingerprint)
            return study, []
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    stored = study.user_attrs.get("fingerprint")
    for _ in range(100):  # a study another process has just created gets its fingerprint next
        if stored is not None:
            break
        time.sleep(0.1)
        stored = study.user_attrs.get("fingerprint")
    if stored != data_fingerprint:
        raise ValueError(
            f"Cannot resume study {study_name!r}: it was run on other data or settings (X, y, folds, task, seed, "
            "nfolds, n_repeats, normalizations, max_iter, early_stopping, batch_size or sort_metric differ; "
            f"fingerprint {str(stored)[:12]}..., this run's {data_fingerprint[:12]}...). Resume with the same "
            "data and settings, or start a new study (another study_name, or without resume).")
    abandoned = []
    # resume=True: the earlier run is over, all it left running is abandoned; "auto" may join live processes,
    # so only the trials whose heartbeat stopped are.
    stale = None if resume is True else set(storage._get_stale_trial_ids(study._study_id))
    for t in study.get_trials(deepcopy=False):
        if stale is not None and t._trial_id not in stale:
            continue
        if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
            attrs = {k: v for k, v in t.user_attrs.items() if k in ("configuration", "portfolio")}
            storage.set_trial_user_attr(t._trial_id, "abandoned", True)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            if t.state == optuna.trial.TrialState.RUNNING or t.params:
                abandoned.append((attrs.get("configuration"), dict(t.params), attrs))
    return study, abandoned


def save_model(trial, model_id, row, fold_rows, cv_pred, params, full):
    """Commit one finished model to its trial (and so to the storage)."""
    payload = {"row": _plain(row), "folds": _plain(fold_rows), "params": _plain(params),
               "cv_pred": _array_to_text(cv_pred)}
    if full is not None:
        payload["full"] = base64.b64encode(pickle.dumps(full)).decode("ascii")
    trial.set_user_attr(MODEL + model_id, payload)


def save_failure(trial, model_id, error):
    trial.set_user_attr(FAILED + model_id, error)


def _params(stored):
    params = dict(stored)
    for key in ("hidden_layer_sizes", "units"):
        if key in params:
            params[key] = tuple(params[key])
    return params


def load_model(payload):
    """``(row, fold_rows, cv_pred, params, full)`` of a stored model (``full`` None without a stored refit)."""
    full = pickle.loads(base64.b64decode(payload["full"])) if "full" in payload else None
    return payload["row"], payload["folds"], _array_from_text(payload["cv_pred"]), _params(payload["params"]), full


def finished_models(study):
    """model_id -> stored payload, over every trial (abandoned ones too: a model they finished is reused)."""
    out = {}
    for t in study.get_trials(deepcopy=False):
        for key, value in t.user_attrs.items():
            if key.startswith(MODEL):
                out.setdefault(key[len(MODEL):], value)
    return out


def done_trials(study):
    """The trials of finished configurations (complete, pruned or failed, not abandoned), by configuration."""
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state in _STATES_DONE and not t.user_attrs.get("abandoned")]
    return sorted(trials, key=lambda t: t.user_attrs.get("configuration", t.number + 1))


def load_leaderboard(storage, study_name=None, sort_metric="AUTO"):
    """The leaderboard of the models a study has finished so far (the nets; the ensembles and baselines come
    at the end of a run), sorted like H2O's; readable while the run goes on, or after it was killed.

    Parameters
    ----------
    storage : str
        The study's storage URL (e.g. ``sqlite:///reports/breast_cancer.study.db``).
    study_name : str, default=None
        None: the storage's only study.
    sort_metric : str, default="AUTO"

    Returns
    -------
    pandas.DataFrame
        The finished models' leaderboard rows; its ``attrs`` hold the study's ``task``, ``running`` (trials
        in progress), ``spent_secs`` and ``stopped_by`` (None while the search goes on).
    """
    summaries = optuna.get_all_study_summaries(storage)
    names = [s.study_name for s in summaries]
    if study_name is None:
        if len(names) != 1:
            raise ValueError(f"Expected `study_name` for a storage holding {len(names)} studies. "
                             f"Received: study_name=None; the studies: {names}")
        study_name = names[0]
    elif study_name not in names:
        raise ValueError(f"Expected `study_name` to name a study of the storage. Received: {study_name!r}; "
                         f"the studies: {names}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    task = study.user_attrs.get("task")
    rows = [payload["row"] for payload in finished_models(study).values()]
    board = pd.DataFrame(rows)
    if len(board) and task is not None:
        board = sort_leaderboard(board, task, sort_metric)
    board.attrs.update(task=task, spent_secs=study.user_attrs.get("spent_secs", 0.0),
                       stopped_by=study.user_attrs.get("stopped_by"),
                       running=sum(t.state == optuna.trial.TrialState.RUNNING for t in study.trials))
    return board
