"""Helpers shared by the tests that talk to live ROS 2 nodes (importable: pytest.ini pythonpath)."""
from __future__ import annotations

import signal
import subprocess
import time
from contextlib import contextmanager


def spin_until(executor, predicate, timeout: float) -> bool:
    """Spin ``executor`` until ``predicate()`` is true or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@contextmanager
def killed_on_exit(proc: subprocess.Popen):
    """``with killed_on_exit(Popen(...)) as proc:``: the process is SIGKILLed if it is still alive
    when the block ends, whether it ended normally or with a failed assertion."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def signal_and_read(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> str:
    """Send ``sig`` and wait for the exit; the process's (text) output. Raises TimeoutExpired if it
    outlives ``timeout`` (pair with :func:`killed_on_exit`)."""
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=timeout)
    return out


def diagnostic_values(diags, name_part: str) -> dict[str, str]:
    """Key/values of the newest DiagnosticStatus whose name contains ``name_part`` ({} if none)."""
    for arr in reversed(diags):
        for status in arr.status:
            if name_part in status.name:
                return {kv.key: kv.value for kv in status.values}
    return {}
