"""The native ops give the same bits on every x86-64 CPU they are built for.

The library is compiled for the CPU it runs on: AVX2 and FMA, plus AVX-512
where the CPU has it (`_native._cpu_flags`). The two builds differ in their
vector width and register tiles; the ops' results must not (shards start
on the same rows, sums add up in a fixed order, tanh, sigmoid and rsqrt
are the same functions). On an AVX-512 machine this test builds the
AVX2-only library and compares every output and gradient of
`native_outputs.py` (the layer-norm ops, the three recurrent layers'
forward and backward ops, fits through the MLPs' native loop), float32 and
float64, computed with each build in a process of its own, bit for bit.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_ln.layers import _native
from tests.layers.test_tf_recurrent_kernels import _native_or_skip

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AVX2_FLAGS = ["-mavx2", "-mfma"]


def _outputs(path, library=None):
    command = [sys.executable, "-m", "tests.layers.native_outputs", str(path)]
    if library is not None:
        command.append(str(library))
    subprocess.run(command, cwd=ROOT, check=True, timeout=600)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_build_with_other_cpu_flags_needs_a_path():
    with pytest.raises(ValueError, match="needs `path`.*cpu_flags=\\['-mavx2', '-mfma'\\]"):
        _native.build(cpu_flags=AVX2_FLAGS)


@pytest.mark.slow
def test_avx2_and_avx512_builds_give_the_same_bits(tmp_path):
    _native_or_skip()
    if "-mavx512f" not in _native._cpu_flags():
        pytest.skip("this CPU has no AVX-512: its build is the AVX2 build")
    library = tmp_path / "avx2_only.so"
    assert _native.build(cpu_flags=AVX2_FLAGS, path=library) == str(library)
    assert library.read_bytes() != open(_native.library_path(), "rb").read()
    assert os.path.exists(_native.library_path())  # the default build left alone

    avx2 = _outputs(tmp_path / "avx2.npz", library)
    native = _outputs(tmp_path / "native.npz")
    assert str(avx2.pop("library")) == str(library)
    assert str(native.pop("library")) == _native.library_path()
    # Every fit went through the native loop in both.
    assert int(avx2["native loop fits"]) == int(native["native loop fits"]) == 10
    assert avx2.keys() == native.keys() and len(native) > 350
    differ = [k for k in native if not np.array_equal(native[k], avx2[k])]
    assert not differ, f"{len(differ)} of {len(native)} arrays differ: {differ[:8]}"
