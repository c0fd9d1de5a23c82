"""Parallel search: workers (Dask) that share one persistent study.

`AutoML(n_jobs=N)` or `AutoML(dask_scheduler=...)` runs its search as N
tasks on Dask workers; each task (`search_worker`) builds an AutoML with the
same parameters, joins the study (`_search.join_study`) and asks and trains
configurations until the budget is spent, committing every model to the
study (`_store`). The coordinating `fit` then reads every model back. A
model's result depends only on its configuration, folds and seed: the
models' seeds never come from Python's shared `random` (`keras_ln.models`),
and TensorFlow's thread pools of a worker are capped to its share of the
cores (`cap_threads`).
"""

import dataclasses
import os
import time
import uuid

from keras_ln.automl import _search


@dataclasses.dataclass
class Search:
    """What the search loop needs, in this process or in a worker's."""

    family: str
    classification: bool
    norms: tuple
    space: dict
    fixed: dict
    sort_col: str
    seed: int
    repeats: list
    budget: float
    max_models: int
    persistent: bool
    shared: bool = False  # other processes work on the same study (count its models there)


def cap_threads(threads):
    """TensorFlow's thread pools for one of several workers on a machine (before TensorFlow starts)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process: its pools stay
        pass


def search_worker(params, state, search, X, y, deadline, threads):
    """One parallel worker's part of the search: configurations asked from the shared study until its budget
    is spent; every finished model is committed to the study. Returns the models it trained."""
    cap_threads(threads)
    from keras_ln.automl._automl import AutoML

    aml = AutoML(**params)
    for name, value in state.items():
        setattr(aml, name, value)
    aml._rows, aml._fold_rows = [], []
    aml.cv_predictions_, aml.params_, aml.models_, aml.stopped_by_ = {}, {}, {}, None
    aml.failed_, aml.pruned_ = {}, {}
    search = dataclasses.replace(search, shared=True)
    with _search.quiet_optuna():
        aml.study_ = _search.join_study(search.family, params["seed"], params["storage"], params["study_name"],
                                        defaults={"max_iter": params["max_iter"]})
        aml._search_loop(X, y, search, [], 0, lambda: time.time() >= deadline, None)
    return len(aml._rows)


def run(workers, dask_scheduler, params, state, search, X, y, deadline):
    """The search on ``workers`` Dask workers sharing the study (a LocalCluster on this machine, or the
    cluster at ``dask_scheduler``); the data is scattered to every worker once. Returns when all have
    stopped."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("n_jobs > 1 and dask_scheduler need Dask: pip install 'keras_ln[dask]'") from None
    threads = max(1, (os.cpu_count() or 1) // workers)
    cluster = None
    if dask_scheduler is None:
        env = {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1",
               "OMP_NUM_THREADS": str(threads),
               "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               env=env)
        client = Client(cluster)
    else:
        client = Client(dask_scheduler, timeout=30)
    try:
        data = client.scatter([X, y], broadcast=True)
        key = uuid.uuid4().hex[:8]
        futures = [client.submit(search_worker, params, state, search, data[0], data[1], deadline, threads,
                                 key=f"keras_ln-search-{key}-{i}", pure=False) for i in range(workers)]
        client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
