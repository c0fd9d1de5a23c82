"""Long sequences: which recurrent layers solve the adding problem at 50, 200 and 500 steps?

The adding problem (Hochreiter & Schmidhuber, 1997; `keras_ln.datasets.make_adding_problem`):
each step holds a value in [0, 1] and a marker, 1 at two steps (one in each half), and the target
is the sum of the two marked values. Predicting the mean gives a test MSE of about 0.167; a run
counts as solved when its test MSE after the epoch budget is below 0.05.

Every layer type (LayerNormLSTM, LSTM, BatchNormLSTM, LayerNormGRU, GRU) gets the same network
(one recurrent layer and `Dense(1)`), width, optimizer (Adam with gradient-norm clipping at 1),
learning rate, batch size and epoch budget, over the same seeds: the comparison is about the layer.
Seed `s` fixes the initial weights and the shuffling (`keras.utils.set_random_seed(s)`) and the
training set (`random_state=s`); the test set is drawn with another `random_state` and is the same
for every run of a length. The test MSE is also measured after every epoch (never used for
training), which gives the first epoch at which it went below 0.05.

BatchNormLSTM predicts at inference with its moving statistics, which start at mean 0 and variance 1 and
after the 504 updates of the defaults still hold 0.99**504 (0.6%) of that, several times the recurrent
norm's variances (~1e-3). So before every test-MSE measurement they are set to population statistics: one
training-mode pass over the training sequences (`keras_ln.sklearn._batch_statistics.recompute_batch_statistics`,
as the keras_ln estimators do after training; it writes only the moving statistics, not the weights).

Prints a table (rows: layers, columns: lengths, cells: runs solved and median test MSE), the median
epoch at which the solved runs first went below 0.05, and the total wall time; saves `runs.csv`
(one row per run), `summary.csv` (one row per layer and length) and `long_sequences.png` (fraction
solved and median test MSE against the length) under `--out`. The defaults took 39 minutes
on 2 CPU cores shared with other work; scale them with the options:

    python examples/long_sequences.py [--steps 50 200 500] [--seeds 5] [--epochs 8]
        [--n-train 2000] [--units 64] [--batch-size 32] [--layers LayerNormLSTM GRU ...]
"""

import argparse
import csv
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras  # noqa: E402
import keras_ln  # noqa: E402
from keras_ln.datasets import make_adding_problem  # noqa: E402
from keras_ln.sklearn._batch_statistics import recompute_batch_statistics  # noqa: E402

LAYERS = {
    "LayerNormLSTM": keras_ln.LayerNormLSTM,
    "LSTM": keras.layers.LSTM,
    "BatchNormLSTM": keras_ln.BatchNormLSTM,
    "LayerNormGRU": keras_ln.LayerNormGRU,
    "GRU": keras.layers.GRU,
}
SOLVED_MSE = 0.05
TEST_RANDOM_STATE = 10_000  # training sets use random_state=seed (0, 1, ...)
RUN_FIELDS = ["layer", "steps", "seed", "test_mse", "solved", "first_epoch_below", "final_train_mse",
              "seconds"]
SUMMARY_FIELDS = ["layer", "steps", "runs", "solved", "fraction_solved", "median_test_mse", "median_first_epoch",
                  "diverged"]


def build(layer, steps, units, seed):
    """One recurrent layer and a linear output; BatchNormLSTM keeps statistics for all `steps` steps."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((steps, 2)), LAYERS[layer](units), keras.layers.Dense(1)])


class TestCurve(keras.callbacks.Callback):
    """The test MSE after every epoch, in inference mode; never used for training.

    With `batch_norm`, the network (BatchNormLSTM) first gets population statistics of the training
    sequences as its moving statistics (`recompute_batch_statistics`: a training-mode pass that writes
    only the moving statistics), so the measurement is not that of the statistics' initial values.
    """

    def __init__(self, x_train, test, batch_size, batch_norm=False):
        super().__init__()
        self.x_train, self.test, self.batch_size, self.batch_norm = x_train, test, batch_size, batch_norm
        self.mse = []
        self._recompute = None

    def recompute(self):
        if self._recompute is None:
            self._recompute = lambda: recompute_batch_statistics(self.model, self.x_train)
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                # Traced once per run; reads the current weights at every call (about 6x faster than eager
                # at 500 steps).
                self._recompute = tf.function(self._recompute, autograph=False)
        self._recompute()

    def on_epoch_end(self, epoch, logs=None):
        if self.batch_norm:
            self.recompute()
        self.mse.append(float(self.model.evaluate(*self.test, batch_size=self.batch_size, verbose=0)))


def run(layer, steps, seed, train, test, args):
    """Train one network for the epoch budget; its test MSE after every epoch and at the end."""
    model = build(layer, steps, args.units, seed)
    model.compile(keras.optimizers.Adam(args.learning_rate, clipnorm=1.0), "mse")
    curve = TestCurve(train[0], test, args.batch_size, batch_norm=layer == "BatchNormLSTM")
    start = time.perf_counter()
    history = model.fit(*train, epochs=args.epochs, batch_size=args.batch_size, shuffle=True, verbose=0,
                        callbacks=[curve]).history
    test_curve = np.asarray(curve.mse, dtype=float)
    below = np.flatnonzero(test_curve < SOLVED_MSE)
    test_mse = float(test_curve[-1])
    return {
        "layer": layer, "steps": steps, "seed": seed,
        "test_mse": test_mse,
        "solved": bool(test_mse < SOLVED_MSE),  # False for NaN
        "first_epoch_below": int(below[0]) + 1 if below.size else "",
        "final_train_mse": float(history["loss"][-1]),
        "seconds": round(time.perf_counter() - start, 2),
    }


def summarize(runs, layers, steps_list):
    rows = []
    for layer in layers:
        for steps in steps_list:
            cell = [r for r in runs if r["layer"] == layer and r["steps"] == steps]
            if not cell:
                continue
            mse = np.array([r["test_mse"] for r in cell], dtype=float)
            first = [r["first_epoch_below"] for r in cell if r["solved"] and r["first_epoch_below"] != ""]
            solved = sum(r["solved"] for r in cell)
            rows.append({
                "layer": layer, "steps": steps, "runs": len(cell), "solved": solved,
                "fraction_solved": solved / len(cell),
                # a diverged run (NaN) counts as the worst MSE
                "median_test_mse": float(np.median(np.where(np.isnan(mse), np.inf, mse))),
                "median_first_epoch": float(np.median(first)) if first else "",
                "diverged": int(np.isnan(mse).sum()),
            })
    return rows


def write_csv(path, fields, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def print_tables(summary, layers, steps_list):
    cells = {(s["layer"], s["steps"]): s for s in summary}
    width = max(len(name) for name in layers)
    print(f"\nSolved (test MSE < {SOLVED_MSE}) and median test MSE, by sequence length:")
    print(f"| {'layer':<{width}} | " + " | ".join(f"{steps} steps" for steps in steps_list) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("---" for _ in steps_list) + "|")
    for layer in layers:
        row = []
        for steps in steps_list:
            s = cells[(layer, steps)]
            mse = "diverged" if np.isinf(s["median_test_mse"]) else f"{s['median_test_mse']:.3f}"
            row.append(f"{s['solved']}/{s['runs']} solved ({mse})")
        print(f"| {layer:<{width}} | " + " | ".join(row) + " |")
    print(f"\nMedian epoch at which the solved runs' test MSE first went below {SOLVED_MSE} (-: none solved):")
    print(f"| {'layer':<{width}} | " + " | ".join(f"{steps} steps" for steps in steps_list) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("---" for _ in steps_list) + "|")
    for layer in layers:
        row = [cells[(layer, steps)]["median_first_epoch"] for steps in steps_list]
        print(f"| {layer:<{width}} | " + " | ".join("-" if e == "" else f"{e:g}" for e in row) + " |")
    diverged = [(s["layer"], s["steps"], s["diverged"]) for s in summary if s["diverged"]]
    for layer, steps, n in diverged:
        print(f"{layer} at {steps} steps: {n} run(s) ended with a NaN loss (counted as not solved)")


def plot(summary, layers, steps_list, path, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_frac, ax_mse) = plt.subplots(1, 2, figsize=(11, 4.2))
    # Lines at the same values stay visible: the first drawn has the widest line and largest marker.
    styles = [dict(marker=m, ls=ls, lw=lw, ms=ms) for m, ls, lw, ms in
              zip("osD^v", ["-", "--", "-.", ":", "-"], [3.0, 2.5, 2.0, 1.5, 1.0], [11, 9, 7, 5, 3])]
    for i, layer in enumerate(layers):
        rows = [s for s in summary if s["layer"] == layer]
        steps = [s["steps"] for s in rows]
        style = styles[i % len(styles)]
        ax_frac.plot(steps, [s["fraction_solved"] for s in rows], label=layer, **style)
        mse = [s["median_test_mse"] if np.isfinite(s["median_test_mse"]) else np.nan for s in rows]
        ax_mse.plot(steps, mse, label=layer, **style)
    ax_frac.set(xlabel="sequence length (steps)", ylabel=f"fraction of runs solved (test MSE < {SOLVED_MSE})",
                ylim=(-0.07, 1.07), xticks=steps_list)
    ax_mse.axhline(SOLVED_MSE, color="gray", ls="--", lw=1)
    ax_mse.axhline(1 / 6, color="gray", ls=":", lw=1)
    ax_mse.text(steps_list[0], 1 / 6, " predicting the mean", va="bottom", fontsize=8, color="gray")
    ax_mse.set(xlabel="sequence length (steps)", ylabel="median test MSE", yscale="log", xticks=steps_list)
    ax_frac.legend(fontsize=8)
    n_seeds = max(s["runs"] for s in summary)
    fig.suptitle(f"Adding problem: {n_seeds} seeds, {args.epochs} epochs of {args.n_train} sequences, "
                 f"{args.units} units, batch {args.batch_size}, Adam {args.learning_rate:g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200, 500], help="sequence lengths")
    parser.add_argument("--seeds", type=int, default=5, help="runs per layer and length (seeds 0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=8, help="epoch budget of every run")
    parser.add_argument("--n-train", type=int, default=2000, help="training sequences")
    parser.add_argument("--n-test", type=int, default=500, help="test sequences")
    parser.add_argument("--units", type=int, default=64, help="width of the recurrent layer")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS), metavar="LAYER",
                        help=f"a subset of {', '.join(LAYERS)}")
    parser.add_argument("--out", default="reports/long_sequences", help="folder for the CSV files and the plot")
    args = parser.parse_args(argv)
    for name in ("seeds", "epochs", "n_train", "n_test", "units", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    if min(args.steps) < 2:
        parser.error("--steps must be at least 2")
    return args


def main(argv=None):
    args = parse_args(argv)
    layers = list(dict.fromkeys(args.layers))
    steps_list = sorted(set(args.steps))
    os.makedirs(args.out, exist_ok=True)
    print(f"Adding problem at {steps_list} steps: {args.seeds} seed(s) x {len(layers)} layer(s), "
          f"{args.epochs} epochs of {args.n_train} training sequences, {args.n_test} test sequences, "
          f"{args.units} units, batch {args.batch_size}, Adam {args.learning_rate:g} (clipnorm 1)")
    started = time.perf_counter()
    runs = []
    for steps in steps_list:
        test = make_adding_problem(args.n_test, steps, random_state=TEST_RANDOM_STATE)[:2]
        for seed in range(args.seeds):
            train = make_adding_problem(args.n_train, steps, random_state=seed)[:2]
            for layer in layers:
                r = run(layer, steps, seed, train, test, args)
                runs.append(r)
                write_csv(os.path.join(args.out, "runs.csv"), RUN_FIELDS, runs)
                print(f"  {steps:4d} steps  seed {seed}  {layer:<13s} test MSE {r['test_mse']:.4f}"
                      f"{'  solved' if r['solved'] else '        '}  ({r['seconds']:.0f} s)", flush=True)
    summary = summarize(runs, layers, steps_list)
    write_csv(os.path.join(args.out, "summary.csv"), SUMMARY_FIELDS, summary)
    plot(summary, layers, steps_list, os.path.join(args.out, "long_sequences.png"), args)
    print_tables(summary, layers, steps_list)
    minutes, seconds = divmod(time.perf_counter() - started, 60)
    print(f"\nWrote {args.out}/runs.csv, summary.csv and long_sequences.png. "
          f"Total wall time: {int(minutes)} min {seconds:.0f} s")
    return summary


if __name__ == "__main__":
    main()
