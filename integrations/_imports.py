"""The CLI's heavy dependencies, imported only when a command needs them.

``--help`` and argument errors need none of them; checking the data needs
keras_ln (and so TensorFlow); only a run with H2O imports h2o, so ``--no-h2o``
works without the ``h2o`` extra installed.

TensorFlow 2.18+ writes absl's pre-initialization notices ("All log messages
before absl::InitializeLog() ...", oneDNN's "I0000 ... port.cc" line) to file
descriptor 2 while it is imported, whatever ``TF_CPP_MIN_LOG_LEVEL`` says.
`keras_ln` drops those below the level ``TF_CPP_MIN_LOG_LEVEL`` asks for (3 in
the CLI), so that the CLI's stderr carries its own messages only: a bad input
is one line there.
"""

import contextlib
import importlib
import os
import re
import sys
import tempfile

from integrations._errors import CLIError

_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# e.g. "I0000 00:00:1796094618.710480    3607 port.cc:153] oneDNN custom operations are on. ..."
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def _min_log_level():
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def drop_absl_notices(text, min_level):
    """``text`` without absl-formatted lines below ``min_level`` (and absl's preamble when that is > 0)."""
    kept = []
    for line in text.splitlines(keepends=True):
        match = _ABSL_LINE.match(line)
        if match and _SEVERITY[match.group(1)] < min_level:
            continue
        if min_level > 0 and line.rstrip("\n") == _ABSL_PREAMBLE:
            continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def _filtered_fd2(min_level):
    """Collect what is written to file descriptor 2 meanwhile; pass on all but absl's low-level notices."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (e.g. a closed stderr): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            rest = drop_absl_notices(sink.read().decode(errors="replace"), min_level)
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


def keras_ln(module):
    """Import ``module`` (``"keras_ln.datasets"``, ...) with TensorFlow's start-up notices dropped."""
    if "tensorflow" in sys.modules:
        return importlib.import_module(module)
    with _filtered_fd2(_min_log_level()):
        return importlib.import_module(module)


def h2o_side():
    """`integrations._h2o` (the H2O cluster and H2O AutoML), or a CLIError when the h2o extra is missing."""
    try:
        import h2o  # noqa: F401
    except ImportError as exc:
        raise CLIError(f"the H2O side needs the h2o package, which cannot be imported ({exc}); "
                       "install it with pip install 'keras_ln[h2o]', or pass --no-h2o") from None
    return importlib.import_module("integrations._h2o")
