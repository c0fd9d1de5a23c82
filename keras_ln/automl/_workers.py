"""Parallel search: workers (Dask) that share one persistent study.

`AutoML(n_jobs=N)` or `AutoML(dask_scheduler=...)` runs its search as N
tasks on Dask workers; each task (`search_worker`) builds an AutoML with the
same parameters, joins the study (`_search.join_study`) and asks and trains
configurations until the budget is spent, committing every model to the
study (`_store`). The coordinating `fit` then reads every model back. A
model's result depends only on its configuration, folds and seed: the
models' seeds never come from Python's shared `random` (`keras_ln.models`),
and every worker's TensorFlow has the intra-op thread count of the
coordinating process (`worker_threads`):
TensorFlow's own matrix products (Eigen's, in XLA and graph ops alike) block
and split their sums by that count, so a worker with fewer threads than a
single-process run can end a model in other last bits (measured on a 2-core
AMD EPYC: a float32 MLP with 512 units differed between one thread and two).
keras_ln's native kernels give the same bits with any thread count; the
native MLP loop of a worker runs in one thread where the worker's share of
the cores is one (its helper would spin against the other workers).
"""

import dataclasses
import os
import time
import uuid

from keras_ln.automl import _search
from keras_ln._system import available_cores


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


@dataclasses.dataclass(frozen=True)
class Threads:
    """A worker's threads: TensorFlow's intra-op pool and the native MLP loop's
    (`keras_ln.sklearn._execution.NATIVE_MLP_THREADS`)."""

    intra_op: int
    native_mlp: int


def intra_op_threads():
    """The intra-op thread count of this process's TensorFlow: the one set (`tf.config.threading`), else
    TensorFlow's default (``TF_NUM_INTRAOP_THREADS``, else the cores this process may run on)."""
    import tensorflow as tf

    own = tf.config.threading.get_intra_op_parallelism_threads()
    if own > 0:
        return own
    env = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return available_cores()


def worker_threads(workers):
    """The `Threads` of each of `workers` workers: the coordinating process's intra-op count (see the module
    doc); the native MLP loop in one thread where a worker's share of the cores this process may run on is
    one."""
    share = max(1, available_cores() // workers)
    return Threads(intra_op=intra_op_threads(), native_mlp=1 if share == 1 else 0)


def set_threads(threads):
    """Apply `threads` (a `Threads`) in this worker process, before TensorFlow starts: the intra-op pool,
    one inter-op thread, and the native MLP loop's threads."""
    import tensorflow as tf

    from keras_ln.sklearn import _execution

    _execution.NATIVE_MLP_THREADS = threads.native_mlp
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads.intra_op))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process: its pools stay
        pass


def search_worker(params, state, search, X, y, deadline, threads):
    """One parallel worker's part of the search: configurations asked from the shared study until its budget
    is spent; every finished model is committed to the study. Returns the models it trained."""
    set_threads(threads)
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
    threads = worker_threads(workers)
    cluster = None
    if dask_scheduler is None:
        env = {"TF_NUM_INTRAOP_THREADS": str(threads.intra_op), "TF_NUM_INTEROP_THREADS": "1",
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
