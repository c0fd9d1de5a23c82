"""Native (C++) TensorFlow ops of the layers' fast paths (optional).

`ln_rnn_ops.cc` (LN-LSTM, LN-GRU, and keras' LSTM and GRU without the
norms) and `bn_lstm_ops.cc` (BatchNormLSTM), with what they share in
`kernels.h`, hold the recurrences as TensorFlow custom ops: one op for the
whole forward loop, one for the whole backward-through-time loop (and
BatchNormLSTM's inference loop), with their own vectorized matrix products.
`layer_norm_ops.cc` holds LayerNormalization's forward and backward passes
(float32 and float64 outside XLA), one op each, with their row code in
`layer_norm.h`; `adam_ops.cc` the Adam update of the
scikit-learn estimators' training step (all variables in one op), and
`row_copy.cc` a plain C function (`copy_rows`, called through ctypes) that
copies the estimators' training rows into their tensor's buffer and hashes
each row in the same pass. They are compiled against the installed
TensorFlow, once, by

    python -m keras_ln.layers._native

(`make install` does it). The library is named after the TensorFlow
version it was built for and a hash of the source and of the
instruction-set flags it is compiled with, so neither an upgraded
TensorFlow, nor changed kernels, nor another CPU are ever handed a stale
build. When no matching library is there, or it does not load, `ops()`
returns None and the layers use their pure-TensorFlow paths, which compute
the same thing.

The recurrent ops take their large tensors (each step's saved gates and
states) from a pool of their own that keeps freed blocks for the next call
of the same size, rather than from malloc, which hands such blocks back to
the system and faults them in again, page by page, on every training step.
`pool_cached_bytes()` says what it holds, `release_pool()` frees it.
"""

import hashlib
import os
import platform
import subprocess
import sys
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))
# The sources, compiled into one library.
SOURCES = tuple(os.path.join(_HERE, name)
                for name in ("kernels.h", "layer_norm.h", "ln_rnn_ops.cc",
                             "bn_lstm_ops.cc", "layer_norm_ops.cc", "adam_ops.cc",
                             "mlp_ops.cc", "row_copy.cc"))

_lock = threading.Lock()
_loaded = {}


# No implicit fused multiply-adds: GCC contracted some a * b + c of an
# element-wise loop and not others (its scalar ends beside the vector
# middle), so a row's results depended on its address (on AVX2 builds); the
# products fuse explicitly (kernels.h, Vectors::MulAdd).
_ARITHMETIC_FLAGS = ["-ffp-contract=off"]


def library_path():
    """Where the library built for the installed TensorFlow lives."""
    import tensorflow as tf

    tag = "".join(c if c.isalnum() or c in "._-" else "_"
                  for c in tf.__version__)
    # The hash covers the instruction-set flags too: a library built for
    # another CPU (a shared file system) is not loaded here.
    digest = hashlib.sha256()
    for source in SOURCES:
        with open(source, "rb") as f:
            digest.update(f.read())
    digest.update(" ".join(_ARITHMETIC_FLAGS + _cpu_flags()).encode())
    digest = digest.hexdigest()[:12]
    return os.path.join(_HERE, f"_ln_rnn_ops-tf{tag}-{digest}.so")


def ops():
    """The loaded op module, or None when the library is not available."""
    with _lock:
        if "module" not in _loaded:
            _loaded["module"] = _load()
        return _loaded["module"]


def _c_function(name, restype, argtypes):
    """The library's extern "C" function `name` through ctypes, or None
    where `ops()` is None (the same library, loaded by TensorFlow first)."""
    if ops() is None:
        return None
    with _lock:
        if name not in _loaded:
            import ctypes

            function = getattr(ctypes.CDLL(library_path()), name)
            function.restype = restype
            function.argtypes = argtypes
            _loaded[name] = function
        return _loaded[name]


def copy_rows():
    """`keras_ln_copy_rows` of `row_copy.cc` as a ctypes function, or None
    where `ops()` is None."""
    import ctypes

    return _c_function("keras_ln_copy_rows", None,
                       [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int])


# The block pool of the recurrent ops (kernels.h's BlockPool): their large
# tensors, from POOL_MIN_BYTES up, come back for the next call of the same
# size, at most POOL_MAX_CACHED_BYTES of them (kernels.h's defaults).
POOL_MIN_BYTES = 128 << 10
POOL_MAX_CACHED_BYTES = 512 << 20


def pool_cached_bytes():
    """Bytes the native recurrent ops keep for their next calls (0 without
    the library)."""
    import ctypes

    function = _c_function("keras_ln_pool_cached_bytes", ctypes.c_size_t, [])
    return 0 if function is None else function()


def release_pool():
    """Frees what the native recurrent ops keep for their next calls (the
    blocks of their large tensors); returns the bytes freed. Their next call
    allocates afresh."""
    import ctypes

    function = _c_function("keras_ln_pool_release", ctypes.c_size_t, [])
    return 0 if function is None else function()


def _configure_pool(min_bytes=POOL_MIN_BYTES, max_cached_bytes=POOL_MAX_CACHED_BYTES,
                    poison=False):
    """Tests: tensors of `min_bytes` and more from the pool, at most
    `max_cached_bytes` cached, and with `poison` every block handed out full
    of NaNs. Frees what the pool held. No arguments: the defaults."""
    import ctypes

    for name, value in (("min_bytes", min_bytes), ("max_cached_bytes", max_cached_bytes)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    function = _c_function("keras_ln_pool_configure", None,
                              [ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int])
    if function is None:
        raise RuntimeError(f"the native ops are not available: {load_error()}")
    function(min_bytes, max_cached_bytes, int(bool(poison)))


def load_error():
    """Why `ops()` is None (a string), or None when it loaded."""
    ops()
    return _loaded.get("error")


def _load():
    import tensorflow as tf

    path = library_path()
    if not os.path.exists(path):
        _loaded["error"] = (
            f"{path} not found; build it with "
            "`python -m keras_ln.layers._native`"
        )
        return None
    try:
        return tf.load_op_library(path)
    except Exception as error:  # a library built for another platform
        _loaded["error"] = f"{path} did not load: {error}"
        return None


def _cpu_flags():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        return []
    # AVX2 + FMA vectorize the fused loops (exp, tanh); AVX-512 doubles the
    # width of the loop's matrix kernel. (Not -march=native: gcc cannot
    # compile Eigen's AVX512-FP16 code.)
    if not {"avx2", "fma"} <= flags:
        return []
    avx512 = {"avx512f", "avx512vl", "avx512dq", "avx512bw"}
    return ["-mavx2", "-mfma"] + (
        [f"-m{flag}" for flag in sorted(avx512)] if avx512 <= flags else []
    )


def build(compiler=None, verbose=False, cpu_flags=None, path=None):
    """Compiles the sources (`SOURCES`) for the installed TensorFlow.

    Writes to a temporary name and renames, so a failed or interrupted build
    never leaves a broken library behind. Returns the library's path.

    `cpu_flags` (a list of compiler flags, default this CPU's: AVX2 and FMA,
    and AVX-512 where it has it) and `path` build another library than the
    one `ops()` loads, e.g. an AVX2-only build on an AVX-512 machine to
    check that the ops give the same bits on both (a library written to
    `path` leaves the default one and its loaded ops alone).
    """
    import tensorflow as tf

    if cpu_flags is not None and path is None:
        raise ValueError(
            "build(cpu_flags=...) needs `path`: the default library is named "
            f"after this CPU's flags {_cpu_flags()}, got cpu_flags={cpu_flags!r} "
            "and path=None")
    compiler = compiler or os.environ.get("CXX", "g++")
    default = path is None
    path = library_path() if default else os.fspath(path)
    cpu_flags = _cpu_flags() if cpu_flags is None else list(cpu_flags)
    tmp = f"{path}.tmp{os.getpid()}"
    command = [
        compiler, "-shared", "-fPIC", "-O3", "-DNDEBUG", "-w", *_ARITHMETIC_FLAGS,
        "-fvisibility=hidden", "-fvisibility-inlines-hidden",
        "-Wl,-Bsymbolic", *cpu_flags,
        *tf.sysconfig.get_compile_flags(),
        *[s for s in SOURCES if s.endswith(".cc")], "-o", tmp,
        *tf.sysconfig.get_link_flags(),
    ]
    if verbose:
        print(" ".join(command), file=sys.stderr)
    try:
        subprocess.run(command, check=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if not default:
        return path
    # Libraries of older sources or other TensorFlow versions are never
    # loaded again.
    # (Only finished libraries: another build's temporary file is its own.)
    for name in os.listdir(_HERE):
        stale = os.path.join(_HERE, name)
        if (name.startswith("_ln_rnn_ops-") and name.endswith(".so")
                and stale != path):
            try:
                os.remove(stale)
            except FileNotFoundError:  # removed by a concurrent build
                pass
    with _lock:
        _loaded.clear()
    return path
