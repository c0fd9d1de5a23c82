"""Wall time and peak memory of keras_ln's AutoML side at scale, with 1 and 2 workers.

Two synthetic data sets (seeded, `make_classification`-like):

- a table of `--rows` x `--features` (default 200,000 x 50), binary;
- sequences of `--sequences` x `--steps` x `--seq-features` (default
  20,000 x 100 x 8), binary (the class is the sign of a running sum).

For each, `keras_ln.automl.AutoML` runs with a SQLite study (as the CLI does)
and `n_jobs` 1 and 2, `--max-models` models, `--max-iter` epochs, 3 folds;
each run in a fresh process, whose process tree (the Dask workers included)
is sampled with psutil every 0.2 s for its summed resident memory. To see
whether memory grows with the number of models, the 1-worker run is also
made with twice the models: the ratio of the two peaks is printed (1.0: no
growth).

    python benchmarks/bench_automl_scale.py [--rows 200000 --features 50]
        [--sequences 20000 --steps 100 --seq-features 8] [--max-models 3]
        [--max-iter 2] [--workers 1 2] [--kinds table sequences]

Takes about an hour at the defaults on 2 cores; `--rows 20000 --sequences
2000` takes a few minutes.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil

_CHILD = r"""
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
from keras_ln.automl import AutoML
spec = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
if spec["kind"] == "table":
    X = rng.normal(size=(spec["rows"], spec["features"])).astype(np.float32)
    w = rng.normal(size=spec["features"])
    y = (X @ w + 0.5 * rng.normal(size=spec["rows"]) > 0).astype(int)
else:
    X = rng.normal(size=(spec["sequences"], spec["steps"], spec["seq_features"])).astype(np.float32)
    y = (X[:, :, 0].cumsum(axis=1)[:, -1] > 0).astype(int)
if __name__ == "__main__":
    t0 = time.perf_counter()
    aml = AutoML(max_models=spec["max_models"], nfolds=3, seed=0, max_iter=spec["max_iter"],
                 n_jobs=spec["workers"], storage=spec["storage"], resume=False).fit(X, y)
    print(json.dumps({"seconds": time.perf_counter() - t0, "models": len(aml.params_),
                      "best": float(aml.leaderboard_["auc"].iloc[0])}))
"""


def _tree_rss(proc):
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run(spec):
    """One AutoML run in a fresh process: its result and the peak resident memory of its process tree."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = {**spec, "storage": f"sqlite:///{os.path.join(tmp, 'study.db')}"}
        script = os.path.join(tmp, "child.py")
        with open(script, "w") as fh:
            fh.write(_CHILD)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        child = subprocess.Popen([sys.executable, script, json.dumps(spec)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        proc = psutil.Process(child.pid)
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.wait(0.2):
                peak[0] = max(peak[0], _tree_rss(proc))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        out, err = child.communicate()
        done.set()
        thread.join()
        if child.returncode != 0:
            raise RuntimeError(f"run {spec} failed:\n{err[-3000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        return {**result, "peak_gib": peak[0] / 2**30}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--sequences", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seq-features", type=int, default=8)
    p.add_argument("--max-models", type=int, default=3)
    p.add_argument("--max-iter", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--kinds", nargs="+", default=["table", "sequences"], choices=["table", "sequences"])
    args = p.parse_args(argv)
    print(f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    print("| data | workers | models | wall time | peak memory (process tree) | best CV AUC |")
    print("|---|---|---|---|---|---|")
    base = dict(rows=args.rows, features=args.features, sequences=args.sequences, steps=args.steps,
                seq_features=args.seq_features, max_iter=args.max_iter)
    growth = {}
    for kind in args.kinds:
        shape = (f"{args.rows} x {args.features}" if kind == "table"
                 else f"{args.sequences} x {args.steps} x {args.seq_features}")
        for workers in args.workers:
            runs = [args.max_models] + ([2 * args.max_models] if workers == min(args.workers) else [])
            peaks = []
            for models in runs:
                r = run({**base, "kind": kind, "workers": workers, "max_models": models})
                peaks.append(r["peak_gib"])
                print(f"| {kind} {shape} | {workers} | {r['models']} | {r['seconds']:.0f} s | "
                      f"{r['peak_gib']:.2f} GiB | {r['best']:.4f} |", flush=True)
            if len(peaks) == 2:
                growth[kind] = peaks[1] / peaks[0]
    for kind, ratio in growth.items():
        print(f"{kind}: peak memory with {2 * args.max_models} models / with {args.max_models}: {ratio:.2f}")


if __name__ == "__main__":
    main()
