"""Take down an H2O JVM whose launching process died without doing it (kill -9, the OOM killer, a CI timeout).

The CLI starts this module as a small process of its own before it launches
H2O (`Watchdog`), in a new session so that signals aimed at the CLI's
process group spare it. The CLI tells it the JVM's PID once H2O is up and
says "done" after shutting the cluster down itself. When the CLI is gone
without saying "done" (its end of the pipe closes, or this process is
re-parented), the watchdog stops every process whose command line holds
``-ice_root <folder>`` (SIGTERM, then SIGKILL after a grace period), removes
the folder and exits. Matching the command line rather than trusting a PID
alone means a JVM that died while its launcher was being killed is still
found, and a recycled PID is never killed. Standard library only; POSIX.

    python _h2o_watchdog.py PARENT_PID ICE_ROOT
"""

import os
import select
import shutil
import signal
import subprocess
import sys
import time

POLL_SECS = 0.5  # how often the parent is checked for when its pipe stays open (a forked child holding it)
TERM_GRACE_SECS = 5.0  # SIGTERM lets H2O's shutdown hooks run; SIGKILL after this


class Watchdog:
    """The CLI's side: start the watchdog process, name the JVM, stop it after a clean shutdown.

    Parameters
    ----------
    ice_root : str
        The folder the JVM is started with (``-ice_root``); removed when the parent dies.
    """

    def __init__(self, ice_root):
        self.ice_root = ice_root
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(os.getpid()), ice_root],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        )

    @property
    def pid(self):
        return self._proc.pid

    def _send(self, line):
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):  # the watchdog is gone or its pipe closed; nothing to tell
            pass

    def watch(self, jvm_pid):
        """Name the JVM to stop should this process die."""
        self._send(f"jvm {int(jvm_pid)}")

    def stop(self, timeout=5.0):
        """The cluster is down and its folder removed: let the watchdog exit without acting."""
        self._send("done")
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# ---------------------------------------------------------------------------
# The watchdog process
# ---------------------------------------------------------------------------
def _command_line(pid):
    """The arguments of process ``pid`` (empty when it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except FileNotFoundError:
        return []
    except OSError:
        pass
    try:  # no /proc (macOS): ps, split on spaces (enough to find "-ice_root <folder>")
        out = subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
        return out.stdout.split()
    except OSError:
        return []


def _holds_ice_root(pid, ice_root):
    args = _command_line(pid)
    return any(a == "-ice_root" and b == ice_root for a, b in zip(args, args[1:]))


def _all_pids():
    if os.path.isdir("/proc"):
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]
    try:
        out = subprocess.run(["ps", "-ax", "-o", "pid="], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    except OSError:
        return []


def find_jvms(ice_root, known=()):
    """PIDs of the live processes started with ``-ice_root ice_root`` (``known`` ones first)."""
    me = os.getpid()
    candidates = list(dict.fromkeys([*known, *_all_pids()]))
    return [p for p in candidates if p != me and _holds_ice_root(p, ice_root)]


def stop_jvms(ice_root, known=(), grace=TERM_GRACE_SECS):
    """SIGTERM, then SIGKILL after ``grace`` seconds, every process of `find_jvms`; returns their PIDs."""
    pids = find_jvms(ice_root, known)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_holds_ice_root(p, ice_root) for p in pids):
            time.sleep(0.1)
        if not any(_holds_ice_root(p, ice_root) for p in pids):
            break
    return pids


def watch(parent_pid, ice_root, stream_fd=0, poll=POLL_SECS):
    """Wait for "done" or the parent's death; on death stop the JVM(s) and remove ``ice_root``.

    Returns True when it had to act.
    """
    known, pending = [], b""
    while os.getppid() == parent_pid:
        ready, _, _ = select.select([stream_fd], [], [], poll)
        if not ready:
            continue
        chunk = os.read(stream_fd, 4096)
        if not chunk:  # the parent's end closed without "done": it died
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip() == b"done":
                return False
            if line.startswith(b"jvm "):
                known.append(int(line[4:]))
    pids = stop_jvms(ice_root, known)
    shutil.rmtree(ice_root, ignore_errors=True)
    print(f"keras_ln: process {parent_pid} ended without shutting down the H2O cluster it started; "
          f"stopped its JVM (pid {', '.join(map(str, pids)) or 'already gone'}) and removed {ice_root}",
          file=sys.stderr, flush=True)
    return True


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not argv[0].isdigit():
        print("usage: python _h2o_watchdog.py PARENT_PID ICE_ROOT", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the CLI is the CLI's to handle
    watch(int(argv[0]), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
