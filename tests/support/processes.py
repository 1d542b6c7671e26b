"""Ending a server a test started in its own process group: cleanly, or like a power cut."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

KILL_TIMEOUT_S = 15


def kill_process_group(process: subprocess.Popen, timeout_s: float = KILL_TIMEOUT_S) -> None:
    """SIGKILL every process in the group that `process` leads, and wait until none is left.

    `process` must have been started with `start_new_session=True`; its children (a server's
    helper processes) share its group, so they die with it instead of lingering.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise RuntimeError(f"processes of group {process.pid} survived SIGKILL for {timeout_s}s")


def stop_process_group(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM the group leader and give it `timeout_s` to shut down; then SIGKILL what is left."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    kill_process_group(process)
