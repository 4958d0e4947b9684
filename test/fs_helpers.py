"""File-system helpers shared by tests (importable: pytest.ini pythonpath)."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str):
    """Mount a tmpfs at ``where`` (needs root / CAP_SYS_ADMIN); skip the test when not permitted.

    A real small or read-only file system gives real ENOSPC / EROFS errors, no mocking."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
