"""Calls with a deadline: persistent worker processes that can be killed.

Some reward code can run for minutes while holding the GIL (math-verify's sympy on
``\\boxed{2^{2^{2^{2^{2^{100}}}}}}``): no thread can interrupt it, and math-verify's own
timeout is ``signal.alarm``, which works only in the main thread. A process can be
killed, so :class:`Worker` runs ``module.function(*args)`` in a child process and, when
no answer comes within the deadline, kills the child and raises :class:`TimeoutError`;
the next call starts a fresh child.

* **Persistent**: a child serves call after call; it starts on first use (``python -c``,
  importing ``module`` and running its ``_worker_init()``) and is replaced only after a
  deadline or a crash. :meth:`Worker.map` sends a whole batch in one message and reads
  the answers as they come, each with its own deadline (counted from the previous
  answer, never the child's start-up), so items pay no round trip each.
* **The same on Linux and macOS**: the child is a fresh interpreter
  (:mod:`subprocess`, not :mod:`multiprocessing`), so it never re-runs the user's
  ``__main__`` (spawn would, in an unguarded training script), can be started from a
  daemonic process (a data-loader worker), and finds the modules the parent finds (its
  ``sys.path`` is the parent's). POSIX only (the pipes are waited on with
  :mod:`selectors`).
* **Safe after fork**: a forked child forgets the parent's workers (``os.register_at_fork``)
  and starts its own; :class:`WorkerPool` gives each concurrent caller (thread) its own
  worker, and stops them all at exit. A child whose parent died (even by SIGKILL, in
  the middle of a check) exits on its own, within about a second.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import json
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from adpo.rewards.text import _shorten

_HEADER = struct.Struct("<Q")  # payload length, then a pickle
_START_TIMEOUT = 300.0  # seconds a child may take to import its module (a loaded machine)
_EXIT_GRACE = 2.0  # seconds a child may take to exit after its pipe closes
_SYS_PATH = "ADPO_WORKER_SYS_PATH"
_BOOT = (
    f"import json, os, sys; sys.path[:] = json.loads(os.environ.pop({_SYS_PATH!r})); "
    "from adpo.rewards._process import _serve; _serve(sys.argv[1])"
)


class _Late:
    def __repr__(self) -> str:
        return "LATE"


LATE: Any = _Late()
"""What :meth:`Worker.map` gives for an item that ran past its deadline."""


class WorkerError(RuntimeError):
    """The worker could not start, or the function it ran raised (its message says which)."""


def _dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _send(fd: int, data: bytes) -> None:
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int, wait: Any) -> bytes:
    chunks = []
    while n:
        wait()
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the worker closed its pipe")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read(fd: int, wait: Any = lambda: None) -> Any:
    (n,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, wait))
    return pickle.loads(_read_exact(fd, n, wait))


class Worker:
    """One child process serving ``module``'s functions (see the module doc).

    Args:
        module: the dotted name of the module whose functions the child runs.
    """

    def __init__(self, module: str):
        self.module = module
        self._proc: subprocess.Popen | None = None
        self._selector: selectors.BaseSelector | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id, ``None`` before it starts or after it was stopped."""
        return None if self._proc is None else self._proc.pid

    def call(self, name: str, args: tuple, *, timeout: float) -> Any:
        """``module.name(*args)`` run in the child; its return value.

        Raises:
            TimeoutError: no answer within ``timeout`` seconds (the child is killed).
            WorkerError: as :meth:`map`.
        """
        (value,) = self.map(name, [args], timeout=timeout)
        if value is LATE:
            raise TimeoutError(f"no answer within {timeout:g} s")
        return value

    def map(self, name: str, arglist: list[tuple], *, timeout: float) -> list:
        """``[module.name(*args) for args in arglist]``, each item within its deadline.

        The tasks go to the child in one message and it answers them in order, so the
        caller waits for no round trip between items. Each item has ``timeout`` seconds
        from the previous answer (the first, from the send); one that runs past it gives
        :data:`LATE`, its child is killed, and a new child takes the remaining items.

        Raises:
            WorkerError: the function raised, the child died while working, or it could
                not start (the message says which).
        """
        out: list = []
        while len(out) < len(arglist):
            todo = arglist[len(out) :]
            if self._proc is not None and self._proc.poll() is not None:  # died while idle
                self.kill()
            if self._proc is None:
                self._start()
            try:
                _send(self._proc.stdin.fileno(), _dumps((name, todo)))
                for _ in todo:
                    wait = functools.partial(self._wait, time.monotonic() + timeout)
                    status, value = _read(self._proc.stdout.fileno(), wait)
                    if status == "error":
                        self.kill()  # it would go on answering the rest
                        raise WorkerError(value)
                    out.append(value)
            except TimeoutError:
                self.kill()
                out.append(LATE)
            except (EOFError, BrokenPipeError):
                code = self._proc.wait()
                self.kill()
                raise WorkerError(
                    f"the worker process for {self.module} died (exit code {code})"
                ) from None
        return out

    def _wait(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0 or not self._selector.select(left):
            raise TimeoutError

    def _start(self) -> None:
        if os.name != "posix":
            raise WorkerError("worker processes with a deadline need POSIX (Linux, macOS)")
        if not sys.executable:
            raise WorkerError("no Python executable to start a worker process (sys.executable)")
        env = dict(os.environ, **{_SYS_PATH: json.dumps(sys.path)})
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, self.module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # the protocol; the child's prints go to stderr
            bufsize=0,
            env=env,
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._proc.stdout.fileno(), selectors.EVENT_READ)
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            status, value = _read(
                self._proc.stdout.fileno(), functools.partial(self._wait, deadline)
            )
        except (TimeoutError, EOFError):
            code = self._proc.poll()
            self.kill()
            raise WorkerError(
                f"the worker process for {self.module} did not start (exit code {code}; its "
                f"error, if any, is printed above)"
            ) from None
        if status != "ready":
            self.kill()
            raise WorkerError(f"the worker process for {self.module} did not start: {value}")

    def kill(self) -> None:
        """Stop the child now (SIGKILL); the next :meth:`call` starts a new one."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._release()

    def close(self) -> None:
        """Stop the child gently: close its pipe, wait :data:`_EXIT_GRACE` s, then kill."""
        if self._proc is not None:
            self._proc.stdin.close()
            try:
                self._proc.wait(_EXIT_GRACE)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._release()

    def forget(self) -> None:
        """In a forked child: drop the parent's worker without touching it."""
        if self._proc is not None:
            self._proc.returncode = 0  # not ours to reap
            self._release()

    def _release(self) -> None:
        self._selector.close()
        for pipe in (self._proc.stdin, self._proc.stdout):
            pipe.close()
        self._proc = self._selector = None


class WorkerPool:
    """:class:`Worker` s of one module; each concurrent caller borrows its own.

    Workers start lazily (a caller that finds none idle makes one) and serve until the
    process exits, when ``atexit`` stops them all, busy ones included; a forked child
    forgets them.
    """

    def __init__(self, module: str):
        self.module = module
        self._workers: list[Worker] = []  # every worker made; the idle ones below
        self._idle: list[Worker] = []
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)
        atexit.register(self.close)

    @contextlib.contextmanager
    def worker(self) -> Iterator[Worker]:
        """A worker for this caller alone, returned to the pool afterwards."""
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
            else:
                worker = Worker(self.module)
                self._workers.append(worker)
        try:
            yield worker
        finally:
            with self._lock:
                self._idle.append(worker)

    def close(self) -> None:
        """Stop every worker (at exit; a later call starts a new one)."""
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.close()

    def _after_fork(self) -> None:
        for worker in self._workers:
            worker.forget()
        self._workers, self._idle = [], []
        self._lock = threading.Lock()  # another thread may have held it at fork


def _serve(module_name: str) -> None:
    """The child's loop: answer ``(name, [args, …])`` tasks until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parent = os.getppid()

    def orphaned() -> None:  # the parent died (even by SIGKILL) while this child worked
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    out = os.dup(1)
    os.dup2(2, 1)  # a print in the served code goes to stderr, not into the protocol
    try:
        module = importlib.import_module(module_name)
        getattr(module, "_worker_init", lambda: None)()
    except Exception as e:
        _send(out, _dumps(("error", f"{type(e).__name__}: {e}")))
        return
    _send(out, _dumps(("ready", os.getpid())))
    while True:
        try:
            name, arglist = _read(0)
        except EOFError:
            return
        for args in arglist:
            try:
                answer = _dumps(("ok", getattr(module, name)(*args)))
            except Exception as e:  # raised, or an answer that cannot be sent back
                error = f"{module_name}.{name}: {type(e).__name__}: {e}"
                answer = _dumps(("error", _shorten(error)))
            _send(out, answer)
