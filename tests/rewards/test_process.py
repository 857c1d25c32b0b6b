"""Worker processes with a deadline (adpo.rewards._process), served modules from the stdlib.

Every test that could hang if the mechanism broke runs its work in a subprocess with a
hard timeout, so a regression fails instead of freezing the suite.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from adpo.rewards._process import LATE, Worker, WorkerError, WorkerPool

# Seconds a child Python (which imports adpo and starts workers) may take before the
# test counts it as hung: far above the seconds it needs on a loaded 2-core machine.
WATCHDOG = 240


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter, killed after WATCHDOG seconds; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_worker_answers_and_keeps_serving():
    w = Worker("math")
    try:
        assert w.call("sqrt", (16.0,), timeout=WATCHDOG) == 4.0
        pid = w.pid
        assert w.call("gcd", (12, 18), timeout=WATCHDOG) == 6
        assert w.pid == pid != os.getpid()  # one persistent child
    finally:
        w.close()
    assert w.pid is None


def test_worker_past_the_deadline_is_killed_and_replaced():
    w = Worker("time")
    try:
        assert w.call("sleep", (0,), timeout=WATCHDOG) is None
        first = w.pid
        with pytest.raises(TimeoutError, match=r"no answer within 0\.2 s"):
            w.call("sleep", (3600,), timeout=0.2)
        assert w.pid is None
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(first, 0)
        assert w.call("sleep", (0,), timeout=WATCHDOG) is None and w.pid not in (None, first)
    finally:
        w.close()


def test_worker_map_answers_a_batch_from_one_child():
    w = Worker("os")
    try:
        first = w.call("getpid", (), timeout=WATCHDOG)
        assert w.map("getpid", [(), (), ()], timeout=WATCHDOG) == [first] * 3
        assert w.map("getpid", [], timeout=WATCHDOG) == []
    finally:
        w.close()


def test_worker_map_gives_late_for_the_item_past_its_deadline_and_goes_on():
    w = Worker("time")
    try:
        got = w.map("sleep", [(0,), (3600,), (0,), (0,)], timeout=0.5)
        assert got == [None, LATE, None, None] and repr(LATE) == "LATE"  # a new child did 3, 4
    finally:
        w.close()


def test_worker_errors_name_what_failed():
    w = Worker("os")
    try:
        with pytest.raises(WorkerError, match=r"os\.no_such_function: AttributeError"):
            w.call("no_such_function", (), timeout=WATCHDOG)
        with pytest.raises(WorkerError, match=r"os\.getcwd: TypeError"):  # the function raised
            w.call("getcwd", (1,), timeout=WATCHDOG)
        with pytest.raises(WorkerError, match=r"died \(exit code 3\)"):
            w.call("_exit", (3,), timeout=WATCHDOG)
        pid = w.call("getpid", (), timeout=WATCHDOG)  # a new child after the crash
        os.kill(pid, 9)  # dies while idle: the next call starts another
        w._proc.wait()
        assert w.call("getpid", (), timeout=WATCHDOG) != pid
    finally:
        w.close()
    with pytest.raises(WorkerError, match="did not start: ModuleNotFoundError"):
        Worker("no_such_module_anywhere").call("f", (), timeout=WATCHDOG)


def test_pool_gives_concurrent_callers_their_own_worker_and_reuses_idle_ones():
    pool = WorkerPool("os")
    barrier = threading.Barrier(2, timeout=WATCHDOG)
    pids = []

    def borrow():
        with pool.worker() as w:
            pids.append(w.call("getpid", (), timeout=WATCHDOG))
            barrier.wait()  # both hold a worker at once

    threads = [threading.Thread(target=borrow) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WATCHDOG)
    try:
        assert len(set(pids)) == 2
        with pool.worker() as w:  # an idle one, not a third
            assert w.call("getpid", (), timeout=WATCHDOG) in pids
    finally:
        pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # close() stopped and reaped them
            os.kill(pid, 0)


def test_pool_after_fork_starts_its_own_worker():
    out = run_python(
        """
        import os
        from adpo.rewards._process import WorkerPool

        pool = WorkerPool("os")
        with pool.worker() as w:
            parent_worker = w.call("getpid", (), timeout=60)
        child = os.fork()
        if child == 0:
            if pool._workers:  # the parent's worker, forgotten at fork (its pipes closed)
                os._exit(2)
            with pool.worker() as w:
                mine = w.call("getpid", (), timeout=60)
            os._exit(0 if mine != parent_worker else 1)
        _, status = os.waitpid(child, 0)
        with pool.worker() as w:  # the parent's worker is untouched
            again = w.call("getpid", (), timeout=60)
        print(os.waitstatus_to_exitcode(status), again == parent_worker)
        """
    )
    assert out.split() == ["0", "True"]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for a reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


SCRIPT_BUSY_WORKER = """
import os, sys, threading, time
from adpo.rewards._process import WorkerPool

pid_file, end = sys.argv[1:]
busy_file = pid_file + ".busy"
pool = WorkerPool("builtins")  # the worker runs exec(code)

def work():
    with pool.worker() as w:
        w.call("exec", ("pass",), timeout=60)
        with open(pid_file, "w") as f:
            f.write(str(w.pid))
        code = f"open({busy_file!r}, 'w').close()\\nimport time\\ntime.sleep(3600)"
        w.call("exec", (code,), timeout=3600)

threading.Thread(target=work, daemon=True).start()
deadline = time.monotonic() + 60
while not os.path.exists(busy_file) and time.monotonic() < deadline:
    time.sleep(0.01)  # until the worker is in the middle of its task
if end == "kill":
    os.kill(os.getpid(), 9)  # no atexit
"""


@pytest.mark.parametrize("end", ["exit", "kill"])
def test_a_worker_busy_when_its_parent_ends_does_not_outlive_it(end, tmp_path):
    # exit: atexit stops busy workers too; kill (SIGKILL, no atexit): the worker notices
    # it was orphaned and exits. Either way nothing spins on after the training process.
    pid_file = tmp_path / "pid"
    try:
        subprocess.run(
            [sys.executable, "-c", SCRIPT_BUSY_WORKER, str(pid_file), end],
            capture_output=True,
            timeout=60,
        )
        # run() may return before the orphan notices (it checks its parent once a second)
        pid, deadline = int(pid_file.read_text()), time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), 9)
