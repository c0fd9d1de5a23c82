"""What this process may run on, for the parts of keras_ln that size
their thread pools, workers and H2O's threads by it."""

import os


def available_cores():
    """The cores this process may run on: its CPU affinity where the
    system has one (a container or `taskset` may allow fewer cores than
    the machine has), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
