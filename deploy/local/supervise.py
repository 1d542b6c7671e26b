"""Keep the system's services running on one machine (what compose's `restart:` does in containers).

    supervise.py --log-dir var/log --pid-dir var/run --ready-url http://127.0.0.1:8000 \\
        --service "worker-1=WORKER_METRICS_PORT=9101 .venv/bin/python -m services.worker" \\
        --service "gateway=.venv/bin/python -m services.gateway"

A service is `NAME=COMMAND`, the command split like a shell would and led by optional
`VAR=value` words that are added to its environment. Each service runs as a child process in its
own process group, its output appended to <log-dir>/<name>.log, its current pid in
<pid-dir>/<name>.pid. When a service exits, for whatever reason (a crash, a SIGKILL from
outside), whatever it left in its process group is killed and it is started again after a
backoff: 1 s, doubling up to 30 s, back to 1 s once a run has stayed up for 60 s. SIGTERM or
SIGINT stops every service (SIGTERM, then SIGKILL after --stop-timeout) and exits 0.

Standard library only, so it runs under any Python 3.11 without the project's virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import BinaryIO

POLL_INTERVAL_S = 0.2
READY_TIMEOUT_S = 120.0
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class ServiceSpec:
    """What to run: a name (for logs and pid files), the argv, and variables added to the environment."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ServiceSpec:
        """`NAME=[VAR=value ...] program [arg ...]`, e.g. `worker-1=PORT=9101 python -m services.worker`."""
        name, separator, command = text.partition("=")
        words = shlex.split(command)
        assignments = 0
        while assignments < len(words) and _ENV_ASSIGNMENT.match(words[assignments]):
            assignments += 1
        if not separator or not re.fullmatch(r"[\w.-]+", name) or assignments == len(words):
            raise ValueError(f"expected NAME=[VAR=value ...] COMMAND, got {text!r}")
        env = dict(word.split("=", 1) for word in words[:assignments])
        return cls(name, words[assignments:], env)


@dataclass
class Backoff:
    """Delay before the next restart: doubles after each quick exit, resets after a long enough run."""

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_after_s: float = 60.0
    _next_s: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._next_s = self.initial_s

    def after_exit(self, uptime_s: float) -> float:
        """The delay to wait before restarting a service that ran for `uptime_s`."""
        if uptime_s >= self.stable_after_s:
            self._next_s = self.initial_s
        delay_s = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay_s


@dataclass
class Service:
    """One supervised service: its spec, its current process (if any) and when to start it next."""

    spec: ServiceSpec
    backoff: Backoff
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    start_due_at: float = 0.0  # monotonic time; 0 = as soon as possible


class Supervisor:
    """Starts the services, restarts each one that exits, stops them all when asked."""

    def __init__(self, services: list[Service], log_dir: Path, pid_dir: Path, stop_timeout_s: float) -> None:
        self.services = services
        self.log_dir = log_dir
        self.pid_dir = pid_dir
        self.stop_timeout_s = stop_timeout_s
        self.stop_signal: int | None = None

    def run(self, ready_url: str | None) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        ready_deadline = time.monotonic() + READY_TIMEOUT_S
        while self.stop_signal is None:
            for service in self.services:
                self._tend(service)
            if ready_url and _answers(f"{ready_url}/readyz"):
                with contextlib.suppress(OSError):
                    print(f"Ready: {ready_url}/  (logs in {self.log_dir}/, Ctrl-C to stop)", flush=True)
                ready_url = None
            elif ready_url and time.monotonic() > ready_deadline:
                _say(f"{ready_url}/readyz did not answer within {READY_TIMEOUT_S:.0f} s; see {self.log_dir}/")
                ready_url = None
            time.sleep(POLL_INTERVAL_S)
        _say(f"{signal.Signals(self.stop_signal).name}: stopping every service")
        self._stop_all()
        return 0

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Signal handler: only records the request, the main loop acts on it."""
        self.stop_signal = signum

    def _tend(self, service: Service) -> None:
        """Start the service if it is due, or notice that it exited and schedule its restart."""
        now = time.monotonic()
        if service.process is None:
            if now >= service.start_due_at:
                self._start(service)
            return
        returncode = service.process.poll()
        if returncode is None:
            return
        uptime_s = now - service.started_at
        _kill_group(service.process.pid)  # e.g. gunicorn workers whose master was SIGKILLed
        delay_s = service.backoff.after_exit(uptime_s)
        _say(
            f"{service.spec.name} (pid {service.process.pid}) {_describe_exit(returncode)} after {uptime_s:.1f} s; "
            f"restarting in {delay_s:g} s"
        )
        service.process = None
        service.start_due_at = now + delay_s

    def _start(self, service: Service) -> None:
        spec = service.spec
        with (self.log_dir / f"{spec.name}.log").open("ab") as log:
            log.write(f"--- supervise: starting {shlex.join(spec.argv)} at {time.ctime()}\n".encode())
            log.flush()
            try:
                service.process = self._spawn(spec, log)
            except OSError as error:  # e.g. a program that does not exist: try again later, like a crash
                delay_s = service.backoff.after_exit(uptime_s=0.0)
                service.start_due_at = time.monotonic() + delay_s
                _say(f"{spec.name} could not start ({error}); trying again in {delay_s:g} s")
                return
        service.started_at = time.monotonic()
        _write_pid_file(self.pid_dir / f"{spec.name}.pid", service.process.pid)
        _say(f"{spec.name} started (pid {service.process.pid})")

    @staticmethod
    def _spawn(spec: ServiceSpec, log: BinaryIO) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C reaches only the supervisor, which then stops every
            # service itself, and a service's leftovers can be killed as a group.
            start_new_session=True,
            preexec_fn=_terminate_when_parent_dies,
        )

    def _stop_all(self) -> None:
        """SIGTERM to every service, SIGKILL to those still running after the stop timeout."""
        running = [service.process for service in self.services if service.process is not None]
        for process in running:
            _signal(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(f"pid {process.pid} still running after {self.stop_timeout_s:g} s: SIGKILL")
                _signal(process.pid, signal.SIGKILL)
                process.wait()
        for process in running:
            _kill_group(process.pid)
        for service in self.services:
            (self.pid_dir / f"{service.spec.name}.pid").unlink(missing_ok=True)
        _say("every service stopped")


def _terminate_when_parent_dies() -> None:
    """Runs in the child before exec: SIGTERM it if the supervisor dies without stopping it (Linux)."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in a service's process group (its leader has already exited)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:  # a signal without a name, e.g. a real-time one
        return f"was killed by signal {-returncode}"


def _write_pid_file(path: Path, pid: int) -> None:
    """Replace the file atomically, so a reader never sees it half-written."""
    partial = path.with_suffix(".pid.partial")
    partial.write_text(f"{pid}\n")
    partial.replace(path)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _say(message: str) -> None:
    # A closed terminal must not stop the supervision.
    with contextlib.suppress(OSError):
        print(f"{time.strftime('%H:%M:%S')} supervise: {message}", file=sys.stderr, flush=True)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", action="append", required=True, type=ServiceSpec.parse, dest="services")
    parser.add_argument("--log-dir", type=Path, default=Path("var/log"))
    parser.add_argument("--pid-dir", type=Path, default=Path("var/run"))
    parser.add_argument("--ready-url", help="base URL: print 'Ready' once its /readyz answers 200")
    parser.add_argument("--stop-timeout", type=float, default=30.0, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("--backoff-initial", type=float, default=1.0, help="seconds before the first restart")
    parser.add_argument("--backoff-max", type=float, default=30.0, help="seconds; the doubling stops here")
    parser.add_argument("--stable-after", type=float, default=60.0, help="seconds up that reset the backoff")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    names = [spec.name for spec in args.services]
    if len(set(names)) != len(names):
        raise SystemExit(f"service names must be unique: {names}")
    services = [
        Service(spec, Backoff(args.backoff_initial, args.backoff_max, args.stable_after)) for spec in args.services
    ]
    supervisor = Supervisor(services, args.log_dir, args.pid_dir, args.stop_timeout)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    return supervisor.run(args.ready_url)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
