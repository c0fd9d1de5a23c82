"""The one error the CLI reports as a single line on stderr with exit status 2."""

EXIT_USAGE = 2  # argparse's status for bad arguments; also bad data, Java missing, H2O failing


class CLIError(Exception):
    """Bad input or an unusable environment: one line on stderr, exit status 2, nothing started or written.

    The message names the argument and what was received, like argparse's:
    ``argument --test-size: 0.99 leaves 1 of 178 rows for training ...``.
    """

    def one_line(self):
        """The message on one line (multi-line causes, e.g. pandas' parser errors, joined with "; ")."""
        parts = [part.strip() for part in str(self).splitlines() if part.strip()]
        return "; ".join(parts) or type(self).__name__
