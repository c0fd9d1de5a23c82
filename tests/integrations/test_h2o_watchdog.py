"""No orphaned H2O: whatever kills the CLI, the cluster it started goes down and its folder is removed.

The watchdog's own tests use a stand-in "JVM" (a sleeping Python process whose
command line holds ``-ice_root <folder>``, as H2O's does) and a stand-in CLI
that is killed with SIGKILL; the last test kills the real CLI while H2O
AutoML runs.
"""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from integrations import _h2o_watchdog as watchdog

psutil = pytest.importorskip("psutil")  # the test extra

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the watchdog is POSIX-only")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A stand-in CLI: starts the watchdog, then a stand-in JVM; optionally tells the watchdog the JVM's
# PID; optionally shuts the JVM down itself and stops the watchdog; prints the PIDs, then waits.
_FAKE_CLI = """
import subprocess, sys, time
from integrations._h2o_watchdog import Watchdog
ice, send_pid, clean_exit = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
dog = Watchdog(ice)
jvm = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "-ice_root", ice],
                       stdout=subprocess.DEVNULL, start_new_session=True)
if send_pid:
    dog.watch(jvm.pid)
print(dog.pid, jvm.pid, flush=True)
if clean_exit:
    jvm.terminate(); jvm.wait(); dog.stop()
    print("clean", dog._proc.returncode, flush=True)
    sys.exit(0)
time.sleep(300)
"""


def _gone(pid):
    """True once ``pid`` has exited (a zombie nobody reaps counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_until(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _kill_quietly(*pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _fake_cli(ice, send_pid, clean_exit):
    return subprocess.Popen([sys.executable, "-c", _FAKE_CLI, str(ice), str(int(send_pid)), str(int(clean_exit))],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("send_pid", [True, False], ids=["jvm-pid-known", "killed-during-startup"])
def test_kill_9_of_the_parent_stops_the_jvm_and_removes_the_folder(tmp_path, send_pid):
    ice = tmp_path / "keras_ln_h2o_test"
    ice.mkdir()
    (ice / "h2ologs").mkdir()
    cli = _fake_cli(ice, send_pid, clean_exit=False)
    dog_pid, jvm_pid = map(int, cli.stdout.readline().split())
    try:
        assert not _gone(jvm_pid) and not _gone(dog_pid)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
        assert _wait_until(lambda: _gone(jvm_pid) and not ice.exists(), timeout=10)
        assert _wait_until(lambda: _gone(dog_pid), timeout=5)
        _, err = cli.communicate(timeout=10)  # the watchdog shared the parent's stderr
        assert f"process {cli.pid} ended without shutting down" in err and f"pid {jvm_pid}" in err
    finally:
        _kill_quietly(jvm_pid, dog_pid)


def test_a_clean_exit_stops_the_watchdog_without_it_acting(tmp_path):
    ice = tmp_path / "keras_ln_h2o_test"
    ice.mkdir()
    cli = _fake_cli(ice, send_pid=True, clean_exit=True)
    dog_pid, jvm_pid = map(int, cli.stdout.readline().split())
    try:
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 0, err
        assert out.split() == ["clean", "0"]  # the watchdog exited with status 0 when told "done"
        assert _gone(dog_pid)
        assert ice.exists()  # removing it is the CLI's job on a clean exit; the watchdog left it alone
        assert "ended without shutting down" not in err
    finally:
        _kill_quietly(jvm_pid, dog_pid)


def test_only_processes_started_with_the_folder_are_stopped(tmp_path):
    ice = str(tmp_path / "keras_ln_h2o_a")
    other = str(tmp_path / "keras_ln_h2o_b")
    sleep = [sys.executable, "-c", "import time; time.sleep(300)"]
    mine = subprocess.Popen([*sleep, "-ice_root", ice], start_new_session=True)
    theirs = subprocess.Popen([*sleep, "-ice_root", other], start_new_session=True)
    unrelated = subprocess.Popen(sleep, start_new_session=True)
    try:
        _wait_until(lambda: watchdog.find_jvms(ice) == [mine.pid], timeout=5)
        # a PID that was handed over but now belongs to another process (recycled) is left alone
        stopped = watchdog.stop_jvms(ice, known=[unrelated.pid, theirs.pid], grace=5)
        assert stopped == [mine.pid]
        assert mine.wait(timeout=5) == -signal.SIGTERM
        assert theirs.poll() is None and unrelated.poll() is None
    finally:
        for proc in (mine, theirs, unrelated):
            proc.kill()
            proc.wait()


def test_a_jvm_ignoring_sigterm_gets_sigkill(tmp_path):
    ice = str(tmp_path / "keras_ln_h2o_stubborn")
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(300)"
    stubborn = subprocess.Popen([sys.executable, "-c", code, "-ice_root", ice], stdout=subprocess.PIPE,
                                start_new_session=True)
    try:
        stubborn.stdout.readline()  # its SIGTERM handler is in place
        t0 = time.monotonic()
        assert watchdog.stop_jvms(ice, grace=0.5) == [stubborn.pid]
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert time.monotonic() - t0 < 5
    finally:
        stubborn.kill()
        stubborn.wait()


def test_watch_acts_when_the_pipe_closes_without_done(tmp_path):
    ice = tmp_path / "keras_ln_h2o_pipe"
    ice.mkdir()
    r, w = os.pipe()
    os.write(w, b"jvm 999999999\n")  # no such process: nothing to stop, the folder still goes
    os.close(w)
    try:
        assert watchdog.watch(os.getppid(), str(ice), stream_fd=r, poll=0.05) is True
    finally:
        os.close(r)
    assert not ice.exists()


def test_watch_does_nothing_after_done(tmp_path):
    ice = tmp_path / "keras_ln_h2o_done"
    ice.mkdir()
    r, w = os.pipe()
    os.write(w, b"jvm 1\ndone\n")
    os.close(w)
    try:
        assert watchdog.watch(os.getppid(), str(ice), stream_fd=r, poll=0.05) is False
    finally:
        os.close(r)
    assert ice.exists()


# ---------------------------------------------------------------------------
# The real thing: kill -9 of the CLI while H2O AutoML runs
# ---------------------------------------------------------------------------
def _answers(url):
    try:
        urllib.request.urlopen(url + "/3/Cloud", timeout=2).read()
        return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.h2o
@pytest.mark.timeout(300)
def test_kill_9_of_the_cli_takes_its_h2o_cluster_down(tmp_path):
    pytest.importorskip("h2o")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "integrations.h2o_automl", "--dataset", "breast_cancer", "--nfolds", "2",
         "--max-runtime-secs", "300", "--out", str(tmp_path / "reports")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    jvms = []
    try:
        line = cli.stdout.readline()  # "H2O AutoML on ... rows (local cluster http://...)" once H2O is up
        match = re.search(r"local cluster (http://[^)\s]+)", line)
        assert match, (line, cli.poll())
        url = match.group(1)
        (ice,) = tmp.glob("keras_ln_h2o_*")
        jvms = [p for p in psutil.Process(cli.pid).children() if "java" in p.name()]
        assert len(jvms) == 1 and _answers(url)
        assert any(a == str(ice) for a in jvms[0].cmdline())
        time.sleep(3)  # H2O AutoML is training
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
        t0 = time.monotonic()
        assert _wait_until(lambda: _gone(jvms[0].pid) and not ice.exists(), timeout=15), \
            f"JVM gone: {_gone(jvms[0].pid)}, {ice} exists: {ice.exists()}"
        print(f"H2O down {time.monotonic() - t0:.1f} s after kill -9")
        assert not _answers(url)
        _, err = cli.communicate(timeout=15)
        assert "ended without shutting down the H2O cluster" in err
        assert not (tmp_path / "reports").exists()
    finally:
        if cli.poll() is None:
            cli.kill()
        _kill_quietly(*[p.pid for p in jvms])
