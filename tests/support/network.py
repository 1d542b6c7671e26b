"""Ports and readiness waits for tests that start real servers."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

T = TypeVar("T")
WAIT_S = 20.0


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports. The sockets stay bound until all are chosen: ports asked
    for one at a time may repeat, and a server given the same port twice fails to start."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(
    probe: Callable[[], T], what: str = "the condition", timeout_s: float = WAIT_S, interval_s: float = 0.05
) -> T:
    """Call `probe` every `interval_s` until it returns something truthy, and return that; fail
    the test (AssertionError naming `what`) if `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(interval_s)


def waiting(timeout_s: float, interval_s: float = 0.05) -> Callable[..., Any]:
    """`wait_until` with other defaults, for a module whose waits share a bound:
    `wait_until = waiting(WAIT_S)` (a call may still pass its own `timeout_s`)."""

    def wait(
        probe: Callable[[], T],
        what: str = "the condition",
        timeout_s: float = timeout_s,
        interval_s: float = interval_s,
    ) -> T:
        return wait_until(probe, what, timeout_s, interval_s)

    return wait


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")
