"""Running deploy/local/supervise.py from tests, and watching processes through /proc (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.settings import REPO_ROOT
from tests.support.network import waiting

SUPERVISE = REPO_ROOT / "deploy" / "local" / "supervise.py"
WAIT_S = 30  # bound on every wait for something the supervisor does by itself
wait_until = waiting(WAIT_S)


class Supervised:
    """A running supervise.py, its pid files and logs in a temporary folder."""

    def __init__(self, root: Path, services: dict[str, str], *options: str, env: dict[str, str] | None = None):
        self.log_dir = root / "log"
        self.pid_dir = root / "run"
        self.output_path = root / "supervise.out"
        root.mkdir(parents=True)
        specs = [argument for name, command in services.items() for argument in ("--service", f"{name}={command}")]
        folders = ["--log-dir", str(self.log_dir), "--pid-dir", str(self.pid_dir)]
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, str(SUPERVISE), *folders, *options, *specs],
                env={**os.environ, **(env or {})},
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def pid(self, name: str, other_than: int | None = None) -> int:
        """The pid of `name`'s current process, once the supervisor has started one (a new one, if
        `other_than` is given)."""
        path = self.pid_dir / f"{name}.pid"

        def current() -> int | None:
            pid = int(path.read_text()) if path.exists() else None
            return pid if pid != other_than and pid is not None and is_alive(pid) else None

        return wait_until(current, f"a running {name} process other than {other_than}")

    def output(self) -> str:
        return self.output_path.read_text()

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def stop(self, signum: signal.Signals = signal.SIGTERM, timeout_s: float = WAIT_S) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=timeout_s)


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an exited child not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_dead(pids: list[int], timeout_s: float = WAIT_S) -> None:
    wait_until(lambda: not any(map(is_alive, pids)), f"exit of all of {pids}", timeout_s)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc/*/stat: this kernel has no /proc/<pid>/task/*/children)."""
    children = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat_path.parent.name))
    return children
