"""`python -m keras_ln.layers._native [--check]`: build the native ops.

Compiles the native ops (`ln_rnn_ops.cc`, `bn_lstm_ops.cc`) against the installed TensorFlow (needs a C++17
compiler; `CXX` picks it, default g++) and checks that the library loads.
With `--check` it only reports whether a usable library is there (exit
status 1 when not). A failed build exits with status 1 and leaves nothing
behind; the layers then use their pure-TensorFlow paths.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_ln.layers._native",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--check", action="store_true",
                        help="only report whether the library loads")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    from keras_ln.layers import _native

    if not args.check:
        try:
            _native.build(verbose=args.verbose)
        except Exception as error:  # no compiler, compile error
            print(f"keras_ln: native ops not built ({error}); the layers "
                  "will use their pure-TensorFlow paths.", file=sys.stderr)
            return 1
    if _native.ops() is None:
        print(f"keras_ln: native ops unavailable: {_native.load_error()}",
              file=sys.stderr)
        return 1
    print(f"keras_ln: native ops ready ({_native.library_path()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
