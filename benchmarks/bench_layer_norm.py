"""Speed of keras_ln.LayerNormalization against keras' layer and the affine floor.

One run, TensorFlow backend on CPU. For each float32 shape it times, inside
`tf.function` (as in `model.fit`), the forward pass and the forward+backward
pass (gradients w.r.t. the input, gamma and beta) of

- keras_ln.LayerNormalization (TensorFlow fast path),
- keras_ln.LayerNormalization on its pure keras.ops path (fast path off),
- keras.layers.LayerNormalization,
- a plain elementwise affine pass `x * gamma + beta` (the memory-traffic floor),

interleaving the candidates round by round so machine noise hits all alike
(each round in an order of its own, so none always follows the same one),
and prints medians and ratios; the summary's one-call speed-up is the median
of the rounds' paired ratios keras / keras_ln, with a 90% distribution-free
interval and the verdict against the 1.3x target (`_paired.py`). On small
shapes one call is mostly `tf.function` dispatch (the affine floor's forward
costs as much as a layer norm's), so each shape is also timed as in a
network: `--chain` (32) applications forward and backward in one
`tf.function`, per application, keras_ln against keras.

Each pass is also timed for a function that only returns a one-element
tensor (the cost of a `tf.function` call itself), and for the call floor: a
function with the candidates' inputs and outputs that computes nothing
(Identity ops), which no implementation can undercut in one call; keras'
time over it, paired by round, is the ceiling of the one-call speed-up; its
time over the affine pass's, what a layer that only scales and shifts its
input shows (the least work a layer does to its data). With `--one-core` the
process and its threads run on one core: TensorFlow runs a called function's
graph on its inter-op thread pool while the calling thread waits, and on a
2-core virtual machine that hand-off between cores can cost more than a
small layer norm (see the README); on one core it is a switch between
threads.

    python benchmarks/bench_layer_norm.py [--repeats 30] [--shapes 4096x1024,...] [--one-core]
"""

import argparse
import os
import sys
import time

# Before TensorFlow starts any thread (they inherit the affinity).
ONE_CORE = "--one-core" in sys.argv[1:] and hasattr(os, "sched_setaffinity")
if ONE_CORE:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Every candidate and shape is a tf.function of its own, traced once: not the
# retracing that TensorFlow's warning about many traced functions is about.
tf.get_logger().setLevel("ERROR")

import keras  # noqa: E402
import keras_ln  # noqa: E402
from keras_ln.layers._layer_norm import layer_norm_reference  # noqa: E402
from keras_ln._system import available_cores  # noqa: E402

from _paired import CONFIDENCE  # noqa: E402  (benchmarks/_paired.py)
from _paired import paired_ratio  # noqa: E402
from _paired import round_orders  # noqa: E402

DEFAULT_SHAPES = "4096x1024,64x128x512,32x128x64,256x64"
SPEEDUP_TARGET = 1.3


def _make_candidates(shape):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    dy = tf.constant(rng.normal(size=shape).astype("float32"))
    ours = keras_ln.LayerNormalization()
    theirs = keras.layers.LayerNormalization()
    for layer in (ours, theirs):
        layer.build(shape)
    gamma = tf.Variable(rng.normal(size=shape[-1:]).astype("float32"))
    beta = tf.Variable(rng.normal(size=shape[-1:]).astype("float32"))

    def affine(t):
        return t * gamma + beta

    def ours_ops(t):
        return layer_norm_reference(t, ours.gamma, ours.beta, -1,
                                    ours.epsilon)

    fns = {
        "empty call": (None, []),
        "call floor": ("floor", [gamma, beta]),
        "keras_ln": (ours, [ours.gamma, ours.beta]),
        "keras_ln (keras.ops path)": (ours_ops, [ours.gamma, ours.beta]),
        "keras": (theirs, [theirs.gamma, theirs.beta]),
        "affine x*g+b": (affine, [gamma, beta]),
    }
    forward, backward = {}, {}
    for name, (fn, weights) in fns.items():
        forward[name], backward[name] = _timed_pair(fn, weights, x, dy)
    return forward, backward


def _timed_pair(fn, weights, x, dy):
    """The forward and forward+backward `tf.function`s of `fn` on `x`.

    They take no arguments: the candidate is a closure variable, not a
    default argument (a `tf.function` binds and checks its arguments on
    every call, a Keras layer passed as one among them: measured ~0.5 ms a
    call at (256, 64), more than the layer norm itself). With `fn` None,
    both only return a one-element tensor: the cost of a call."""
    if fn is None:
        one = tf.constant([0.0])

        def nothing():
            return one

        return tf.function(nothing), tf.function(nothing)
    if fn == "floor":
        # The candidates' call with nothing computed: the same captured
        # inputs (x; dy and the weights) and as many outputs, each an
        # Identity of an input. No layer can take less in one call, so
        # keras' time over this one is the most any could show.
        def forward_floor():
            return tf.identity(x)

        def fwd_bwd_floor():
            with tf.control_dependencies([x]):
                return [tf.identity(dy)] + [tf.identity(w) for w in weights]

        return tf.function(forward_floor), tf.function(fwd_bwd_floor)

    def forward():
        return fn(x)

    def fwd_bwd():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, [x, *weights], output_gradients=dy)

    return tf.function(forward), tf.function(fwd_bwd)


def _time(fns, repeats, samples=None):
    """Median milliseconds of each function, interleaved round by round;
    each round's seconds are appended to `samples[name]` if given.

    Each round takes the functions in an order of its own
    (`_paired.round_orders`)."""
    for fn in fns.values():  # trace, compile, warm up
        fn()
        fn()
    samples = {} if samples is None else samples
    for name in fns:
        samples[name] = []
    for order in round_orders(fns, repeats):
        for name in order:
            start = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: float(np.median(samples[name])) * 1e3 for name in fns}


def _chained(shape, repeats, chain):
    """Per-application forward+backward time (ms) of `chain` layer norms in
    one tf.function, keras_ln and keras."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    fns = {}
    for name, layer in (("keras_ln", keras_ln.LayerNormalization()),
                        ("keras", keras.layers.LayerNormalization())):
        layer.build(shape)

        fns[name] = _chain_fn(layer, x, chain)
    return {name: ms / chain for name, ms in _time(fns, repeats).items()}


def _chain_fn(layer, x, chain):
    """`chain` applications of `layer`, forward and backward, as one
    argument-free `tf.function` (see `_timed_pair`)."""
    @tf.function
    def fn():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = x
            for _ in range(chain):
                y = layer(y) * 1.01
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, layer.gamma, layer.beta])

    return fn


def _report(title, medians, anchor):
    print(f"  {title}")
    base = medians[anchor]
    for name, ms in medians.items():
        print(f"    {name:<28s} {ms:9.3f} ms   {ms / base:6.2f}x {anchor}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--chain", type=int, default=32)
    parser.add_argument("--one-core", action="store_true",
                        help="run the process on one core (see the module doc)")
    args = parser.parse_args(argv)
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    if args.one_core and not ONE_CORE:
        parser.error("--one-core needs os.sched_setaffinity (Linux)")
    n_cores = available_cores()
    cores = "one core (--one-core)" if ONE_CORE else f"{n_cores} cores"
    print(
        f"keras {keras.__version__}, tensorflow {tf.__version__}, "
        f"backend {keras.backend.backend()}, float32, median of {args.repeats}, {cores}"
    )
    summary = []
    for shape in shapes:
        forward, backward = _make_candidates(shape)
        print(f"\nshape {shape}")
        fwd = _time(forward, args.repeats)
        _report("forward", fwd, "affine x*g+b")
        rounds = {}
        bwd = _time(backward, args.repeats, rounds)
        _report("forward+backward", bwd, "keras")
        chained = _chained(shape, args.repeats, args.chain)
        _report(f"forward+backward, per application of {args.chain} in one function", chained, "keras")
        # keras / keras_ln round by round (the candidates take turns in each)
        paired = paired_ratio(rounds["keras"], rounds["keras_ln"], SPEEDUP_TARGET,
                              higher_is_better=True)
        # The most any implementation could show in one call (see "call floor")
        ceiling, _ = paired_ratio(rounds["keras"], rounds["call floor"])
        # What a layer that only scales and shifts its input shows: the
        # least work a layer does to its data, forward and backward
        affine, _ = paired_ratio(rounds["keras"], rounds["affine x*g+b"])
        # The layers' own time: above a call of a function that does nothing
        # (medians; that call is the same for any function, see the module doc)
        empty = bwd["empty call"]
        own = ((bwd["keras"] - empty) / (bwd["keras_ln"] - empty)
               if bwd["keras_ln"] > empty else float("nan"))  # nan: within the call's noise
        summary.append(
            (shape, paired, ceiling, affine, own, chained["keras"] / chained["keras_ln"],
             fwd["keras_ln"] / fwd["affine x*g+b"])
        )
    print(f"\nsummary (targets: fwd+bwd speed-up >= {SPEEDUP_TARGET}x; forward <= 1.5x affine). One call:"
          f" the median of the rounds' paired speed-ups, its {CONFIDENCE:.0%} interval and the verdict")
    print("  (ceiling: keras over the call floor, a function with the same inputs and outputs that"
          " computes nothing, paired the same way: the most any layer could show in one call;")
    print("   affine: keras over the affine pass x*g+b, forward and backward, paired the same way: what"
          " a layer that only scales and shifts its input shows in one call;")
    print("   above an empty call: the medians' time above that of a function that only returns"
          " a one-element tensor)")
    for shape, (speedup, verdict), ceiling, affine, own, chained, floor in summary:
        print(
            f"  {str(shape):<16s} fwd+bwd: keras / keras_ln = {speedup} (one call, {verdict}; "
            f"ceiling {ceiling}; affine {affine}), "
            f"{own:5.2f}x (above an empty call), {chained:5.2f}x (in a chain)   "
            f"forward: keras_ln / affine = {floor:5.2f}x"
        )


if __name__ == "__main__":
    main()
