"""Subprocesses in tests that leave nothing running behind them.

``subprocess.run(..., timeout=T)`` kills only the direct child when ``T`` expires: a launcher's workers
(``torchrun``'s ranks, a CLI's children) are orphaned and keep running -- and competing for CI's two cores -- for
the rest of the suite. Here every child starts in its own process group, and on a timeout the whole group is
killed and the test fails with the output tail.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s whole process group (it was started with ``start_new_session=True``)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def popen(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` in a new session (its own process group), so :func:`kill_group` reaches its children."""
    return subprocess.Popen(list(cmd), start_new_session=True, **kwargs)


def communicate(proc: subprocess.Popen, timeout: float) -> tuple[Any, Any]:
    """``proc.communicate(timeout)``; on a timeout the process group is killed and the test fails with the output
    tail instead of hanging."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        tail = (out or "")[-2000:] if isinstance(out, str) else (out or b"")[-2000:]
        raise AssertionError(f"{proc.args!r} did not finish in {timeout} s; output tail: {tail!r} {err!r}") from None


def run(cmd: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None, text: bool = True,
        **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, timeout=timeout)`` that kills the whole process group on a
    timeout (and then fails the test) instead of waiting for grandchildren that hold the pipes."""
    proc = popen(cmd, env=None if env is None else dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 stdin=subprocess.DEVNULL, text=text, **kwargs)
    out, err = communicate(proc, timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
