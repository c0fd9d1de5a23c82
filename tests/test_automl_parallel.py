"""AutoML with parallel workers sharing one study: a Dask LocalCluster of 2 workers, and two OS processes.

A model's result must depend only on its configuration, its folds and the
seed, never on which worker trained it or how many ran at once: the
portfolio's configurations (numbered 1.. in every run) are compared model by
model with a single-process run.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_ln.automl import AutoML, load_leaderboard
from keras_ln.automl import _search

pytest.importorskip("dask.distributed")

SETTINGS = dict(nfolds=3, seed=0, max_iter=3)


@pytest.fixture(scope="module")
def single(breast_cancer_120):
    return AutoML(max_models=6, **SETTINGS).fit(*breast_cancer_120)


def _same_models(a, b):
    shared = sorted(set(a.params_) & set(b.params_))
    for model_id in shared:
        assert a.params_[model_id] == b.params_[model_id], model_id
        np.testing.assert_array_equal(a.cv_predictions_[model_id], b.cv_predictions_[model_id], err_msg=model_id)
    return shared


def test_local_cluster_of_two_workers(breast_cancer_120, single, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    aml = AutoML(max_models=6, n_jobs=2, storage=url, **SETTINGS).fit(*breast_cancer_120)
    assert aml.stopped_by_ == "max_models"
    assert 6 <= len(aml.params_) <= 6 + 1  # a worker may start one model past the budget
    nets = aml.leaderboard_[aml.leaderboard_["normalization"].isin(["layer", "batch", "none"])]
    assert set(nets["model_id"]) == set(aml.params_)
    assert {"StackedEnsemble_AllModels", "Baseline_GLM"} <= set(aml.leaderboard_["model_id"])
    # both workers trained: the study's models carry two process ids' trials
    assert len(load_leaderboard(url)) == len(aml.params_)
    portfolio = {f"MLP_{i + 1}" for i in range(len(_search.PORTFOLIO["mlp"]))}
    shared = _same_models(aml, single)
    assert {m.rsplit("_", 1)[0] for m in shared} <= portfolio and len(shared) >= 3
    assert aml.leader_ is not None and aml.predict(breast_cancer_120[0]).shape == (len(breast_cancer_120[1]),)


def test_in_memory_study_with_workers_uses_a_temporary_file(breast_cancer_120, single):
    aml = AutoML(max_models=3, n_jobs=2, **SETTINGS).fit(*breast_cancer_120)
    assert len(aml.params_) >= 3 and len(aml.study_.trials) >= 1  # the study was copied into memory
    _same_models(aml, single)


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from keras_ln.automl import AutoML
    from keras_ln.datasets import load_breast_cancer
    X, y, _ = load_breast_cancer()
    idx = np.random.default_rng(0).permutation(len(y))[:120]
    aml = AutoML(max_models=4, **{settings!r}, storage=sys.argv[1], study_name="shared").fit(X[idx], y[idx])
    print(" ".join(sorted(aml.params_)))
""")


def test_two_processes_share_one_study(breast_cancer_120, single, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(settings=SETTINGS))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    children = [subprocess.Popen([sys.executable, str(script), url], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [c.communicate(timeout=600) for c in children]
    for child, (out, err) in zip(children, outs):
        assert child.returncode == 0, err[-3000:]
    seen = [set(out.split()) for out, _ in outs]
    board = load_leaderboard(url, "shared")
    assert set(board["model_id"]) == seen[0] | seen[1]
    assert len(board) == len(set(board["model_id"]))  # each model once
    # every model equals the single-process run's model of that id where both have it
    stored = AutoML(max_models=1, **SETTINGS, storage=url, study_name="shared").fit(*breast_cancer_120)
    _same_models(stored, single)


def test_an_existing_dask_cluster(breast_cancer_120, single, tmp_path):
    """dask_scheduler: the workers of a cluster the caller runs (one task per worker thread); it needs a
    storage they reach."""
    from dask.distributed import LocalCluster

    with pytest.raises(ValueError, match="Expected `storage`"):
        AutoML(max_models=3, dask_scheduler="tcp://127.0.0.1:1", **SETTINGS).fit(*breast_cancer_120)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        aml = AutoML(max_models=4, n_jobs=None, dask_scheduler=cluster.scheduler_address, storage=url,
                     **SETTINGS).fit(*breast_cancer_120)
        assert cluster.scheduler_address.startswith("tcp://")
    assert 4 <= len(aml.params_) <= 5
    assert len(_same_models(aml, single)) >= 3


def test_each_queued_configuration_goes_to_one_worker_on_sqlite(tmp_path):
    """Workers pop queued configurations from one SQLite study at once: each is trained by exactly one of them.

    SQLite ignores the row lock Optuna's claim of a queued trial relies on;
    before the storage began every transaction with ``BEGIN IMMEDIATE``, four
    threads popping 150 queued trials claimed about 50 of them twice (the
    CI failure "Trial#0 has already finished", a model saved to a trial
    another worker had finished)."""
    import pickle
    import threading
    from collections import Counter

    import optuna

    from keras_ln.automl import _store

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(storage=_store.rdb_storage(url), study_name="queue")
    for i in range(150):
        study.enqueue_trial({"x": float(i)}, skip_if_exists=False)
    claimed = Counter()

    def worker(storage):
        mine = optuna.load_study(study_name="queue", storage=storage)
        while (trial_id := mine._pop_waiting_trial_id()) is not None:
            claimed[trial_id] += 1

    # half the workers get their storage as a Dask worker does, unpickled
    storages = [_store.rdb_storage(url) for _ in range(2)] + [pickle.loads(pickle.dumps(_store.rdb_storage(url)))
                                                              for _ in range(2)]
    threads = [threading.Thread(target=worker, args=(s,)) for s in storages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 150 and max(claimed.values()) == 1, Counter(claimed.values())


def test_configurations_follow_trial_numbers_when_processes_ask_at_once(tmp_path):
    """Configuration k is the portfolio's entry k, in whichever process asks for it, however the asks interleave.

    The portfolio once was enqueued just before each ask: two processes could
    interleave so that one took the other's enqueued entry and then got a
    sampled trial under a portfolio number (the flaky MLP_2 of
    `test_two_processes_share_one_study`). The sampler now gives the entries
    by configuration number, which Optuna's atomic trial numbers decide."""
    import threading

    from keras_ln.automl import _store

    url = f"sqlite:///{tmp_path / 'race.db'}"
    defaults = {"max_iter": 40}
    space = {**_search.MLP_SPACE, "max_iter": _search.epochs_distribution(40)}
    study, _ = _search.make_study("mlp", True, 0, storage=url, study_name="race", fingerprint="f", resume=False,
                                  defaults=defaults)
    asked, errors = [], []

    def worker():
        try:
            mine = _search.join_study("mlp", 0, url, "race", defaults=defaults)
            barrier.wait()
            for _ in range(4):
                trial = _search.ask(mine, "mlp", space)
                asked.append(trial.number)
                mine.tell(trial, 0.5)
        except Exception as e:  # reported below, with the thread's own error
            errors.append(e)

    barrier = threading.Barrier(4)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    trials = _store.rdb_storage(url).get_all_trials(study._study_id)
    assert sorted(asked) == list(range(16)) and len(trials) == 16  # nothing enqueued and left waiting
    portfolio = _search.PORTFOLIO["mlp"]
    by_number = {t.user_attrs["configuration"]: t for t in trials}
    assert sorted(by_number) == list(range(1, 17))
    for k, entry in enumerate(portfolio, start=1):
        assert by_number[k].params == {**entry, "max_iter": 40}, k
        assert by_number[k].user_attrs.get("portfolio") is True
    assert not any(t.user_attrs.get("portfolio") for k, t in by_number.items() if k > len(portfolio))
    # the sampled ones lie in the declared space (what TPE proposes depends on the trials finished by then)
    for t in trials:
        assert set(t.params) == set(space)
        assert all(space[k]._contains(space[k].to_internal_repr(v)) for k, v in t.params.items())

    # a killed run's configuration, re-enqueued by one process and asked by another, keeps its number and params
    retry = (2, dict(by_number[2].params), {"configuration": 2, "portfolio": True})
    other = _search.join_study("mlp", 0, url, "race", defaults=defaults)
    study.enqueue_trial(retry[1], user_attrs=retry[2])
    trial = _search.ask(other, "mlp", space)
    assert trial.user_attrs["configuration"] == 2 and trial.params == by_number[2].params


def test_workers_take_the_coordinating_process_intra_op_threads(monkeypatch):
    """Every worker gets this process's TensorFlow intra-op count: the one set, else TF_NUM_INTRAOP_THREADS,
    else the cores this process may run on (TensorFlow's default); the native MLP loop runs in one thread
    where a worker's share of those cores is one; `n_jobs=None` starts one worker per core. (Eigen's
    products split their sums by the thread count: with the cores divided among the workers, the
    comparisons with a single-process run above failed on a 2-core AMD EPYC.)"""
    import tensorflow as tf

    from keras_ln.automl import _workers

    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 3)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "5")
    assert _workers.intra_op_threads() == 3
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 0)
    assert _workers.intra_op_threads() == 5
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    assert _workers.intra_op_threads() == len(os.sched_getaffinity(0))
    # The cores this process may run on, not the machine's: 8 of 64.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert _workers.intra_op_threads() == 8
    assert _workers.worker_threads(8) == _workers.Threads(intra_op=8, native_mlp=1)
    assert _workers.worker_threads(4) == _workers.Threads(intra_op=8, native_mlp=0)
    assert AutoML(n_jobs=None)._n_workers() == 8  # n_jobs=None: one worker per core
