"""tests/bounded_run.py: on a timeout the whole process group is killed (no orphaned grandchild keeps running)
and the test fails fast with the output tail."""

from __future__ import annotations

import os
import sys
import time

import pytest
from bounded_run import run


def test_a_timeout_kills_the_whole_group_and_fails_fast(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f" open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(AssertionError, match="did not finish in 2"):
        run([sys.executable, "-c", code], timeout=2)
    assert time.monotonic() - start < 15
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a killed child not yet reaped by init is a zombie
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_a_finished_command_returns_its_output_and_status():
    done = run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
               timeout=60)
    assert (done.returncode, done.stdout.strip(), done.stderr.strip()) == (3, "out", "err")
