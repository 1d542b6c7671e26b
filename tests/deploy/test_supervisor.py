"""deploy/local/supervise.py, the supervisor behind `make run`, run as a real process.

Tiny `python -c` services stand in for the real ones, except in the gateway tests, which run the
real gateway (gunicorn) against the test broker namespace and S3 store. Linux only: liveness is
read from /proc.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT, Settings
from tests.support.network import free_port, wait_for_http
from tests.support.supervisor import SUPERVISE, WAIT_S, Supervised, children_of, is_alive, wait_dead, wait_until
from tests.support.system import system_env

GATEWAY_START_S = 90

_spec = importlib.util.spec_from_file_location("supervise", SUPERVISE)
assert _spec is not None and _spec.loader is not None
supervise = importlib.util.module_from_spec(_spec)
sys.modules["supervise"] = supervise  # dataclasses look their module up while the class is built
_spec.loader.exec_module(supervise)


def python_service(code: str, *args: object) -> str:
    """The command of a service that runs `code` in a fresh Python, quoted for --service."""
    return shlex.join([sys.executable, "-c", code, *map(str, args)])


SLEEPER = python_service("import time; time.sleep(600)")
# Ignores SIGTERM, so only the supervisor's SIGKILL after --stop-timeout ends it.
TERM_IGNORER = python_service(
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring SIGTERM', flush=True); "
    "time.sleep(600)"
)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    """Starts supervisors; any still running at the end is stopped, then killed."""
    started: list[Supervised] = []

    def start(services: dict[str, str], *options: str, env: dict[str, str] | None = None) -> Supervised:
        supervisor = Supervised(tmp_path / f"supervisor-{len(started)}", services, *options, env=env)
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        try:
            supervisor.stop()
        except subprocess.TimeoutExpired:
            supervisor.process.kill()
            supervisor.process.wait(timeout=10)


# --- the parts, without processes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uptimes_s", "delays_s"),
    [
        ([0, 0, 0, 0, 0, 0, 0, 0], [1, 2, 4, 8, 16, 30, 30, 30]),  # doubles, capped at 30 s
        ([0, 0, 0, 60, 0], [1, 2, 4, 1, 2]),  # a run of 60 s starts the doubling again
        ([59.9, 59.9, 120], [1, 2, 1]),
    ],
)
def test_backoff_doubles_after_each_quick_exit_up_to_its_cap_and_resets_after_a_stable_run(uptimes_s, delays_s):
    backoff = supervise.Backoff(initial_s=1, max_s=30, stable_after_s=60)
    assert [backoff.after_exit(uptime_s) for uptime_s in uptimes_s] == delays_s


@pytest.mark.parametrize(
    ("text", "name", "argv", "env"),
    [
        ("gateway=python -m services.gateway", "gateway", ["python", "-m", "services.gateway"], {}),
        (
            "worker-2=WORKER_METRICS_PORT=9111 LOG_LEVEL=DEBUG python -m services.worker",
            "worker-2",
            ["python", "-m", "services.worker"],
            {"WORKER_METRICS_PORT": "9111", "LOG_LEVEL": "DEBUG"},
        ),
        (
            "trainer='my venv/python' -m services.trainer serve",
            "trainer",
            ["my venv/python", "-m", "services.trainer", "serve"],
            {},
        ),
        ("x=python -c 'a=1'", "x", ["python", "-c", "a=1"], {}),
    ],
)
def test_service_spec_is_a_name_then_environment_assignments_then_the_command(text, name, argv, env):
    assert supervise.ServiceSpec.parse(text) == supervise.ServiceSpec(name, argv, env)


@pytest.mark.parametrize("text", ["python -m services.gateway", "gateway=", "gateway=PORT=1", "a b=python", "=python"])
def test_service_spec_without_a_name_or_a_command_is_refused(text):
    with pytest.raises(ValueError, match="NAME="):
        supervise.ServiceSpec.parse(text)


# --- the supervisor process ---------------------------------------------------------------------


def test_a_service_killed_with_sigkill_is_started_again(supervised):
    supervisor = supervised({"sleeper": SLEEPER, "bystander": SLEEPER})
    first = supervisor.pid("sleeper")
    bystander = supervisor.pid("bystander")

    os.kill(first, signal.SIGKILL)

    second = supervisor.pid("sleeper", other_than=first)
    assert not is_alive(first)
    assert supervisor.pid("bystander") == bystander, "only the service that died is restarted"
    assert f"sleeper (pid {first}) was killed by SIGKILL" in supervisor.output()
    assert supervisor.log("sleeper").count("--- supervise: starting") == 2
    assert supervisor.stop() == 0
    wait_dead([second, bystander])


def test_a_service_that_keeps_exiting_is_restarted_after_growing_delays(supervised, tmp_path):
    starts_path = tmp_path / "starts"
    # Records when it started (CLOCK_MONOTONIC is the same for every process), then fails.
    crasher = python_service(
        "import sys, time; open(sys.argv[1], 'a').write(f'{time.monotonic()}\\n'); sys.exit(3)", starts_path
    )
    supervisor = supervised({"crasher": crasher}, "--backoff-initial", "0.25", "--backoff-max", "1")

    def six_starts() -> list[float] | None:
        starts = [float(line) for line in starts_path.read_text().split()] if starts_path.exists() else []
        return starts if len(starts) >= 6 else None

    starts = wait_until(six_starts, "six starts")
    assert supervisor.stop() == 0

    # The delays the supervisor chose: doubling from 0.25 s, capped at 1 s...
    restarts = [line for line in supervisor.output().splitlines() if "restarting in " in line][:5]
    delays = [float(line.rsplit("restarting in ", 1)[1].split()[0]) for line in restarts]
    assert delays == [0.25, 0.5, 1, 1, 1]
    assert "crasher (pid " in supervisor.output() and "exited with code 3" in supervisor.output()
    # ...and kept: each start comes at least that long after the one before (no upper bound: the
    # machine may be slow).
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=False)), (gaps, delays)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_every_service_and_the_supervisor_exits_0(supervised, signum):
    supervisor = supervised(
        {"one": SLEEPER, "two": SLEEPER, "stubborn": TERM_IGNORER}, "--stop-timeout", "2", "--backoff-initial", "0.1"
    )
    pids = [supervisor.pid(name) for name in ("one", "two", "stubborn")]
    wait_until(lambda: "ignoring SIGTERM" in supervisor.log("stubborn"), "SIGTERM handler in place")

    returncode = supervisor.stop(signum, timeout_s=WAIT_S)

    assert returncode == 0
    assert not any(map(is_alive, pids)), "no service outlives the supervisor"
    assert f"pid {pids[2]} still running after 2 s: SIGKILL" in supervisor.output()
    assert "restarting" not in supervisor.output(), "services stopped on purpose are not restarted"
    assert not list(supervisor.pid_dir.iterdir())


def test_processes_left_behind_by_a_service_that_died_are_killed_before_it_restarts(supervised, tmp_path):
    # Like a gunicorn master SIGKILLed while its worker still holds the port.
    grandchild_path = tmp_path / "grandchild.pid"
    parent = python_service(
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "open(sys.argv[1], 'w').write(str(child.pid)); time.sleep(600)",
        grandchild_path,
    )
    supervisor = supervised({"parent": parent})
    first = supervisor.pid("parent")
    grandchild = wait_until(lambda: grandchild_path.exists() and grandchild_path.read_text(), "grandchild pid")

    os.kill(first, signal.SIGKILL)

    supervisor.pid("parent", other_than=first)
    wait_dead([int(grandchild)])


def test_services_are_terminated_when_the_supervisor_itself_is_killed(supervised):
    supervisor = supervised({"one": SLEEPER, "two": SLEEPER})
    pids = [supervisor.pid("one"), supervisor.pid("two")]

    supervisor.process.kill()
    supervisor.process.wait(timeout=WAIT_S)

    wait_dead(pids)


# --- the real gateway -----------------------------------------------------------------------------


def gateway_env(settings: Settings, models_dir: Path, port: int) -> dict[str, str]:
    return {**system_env(settings, models_dir, http_port=port), "PYTHONPATH": str(REPO_ROOT)}


def test_the_gateway_comes_back_after_its_gunicorn_master_is_sigkilled(supervised, s3_settings, models_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = shlex.join([sys.executable, "-m", "services.gateway"])
    supervisor = supervised({"gateway": gateway}, "--ready-url", url, env=gateway_env(s3_settings, models_dir, port))
    wait_for_http(f"{url}/readyz", GATEWAY_START_S, supervisor.process)
    wait_until(lambda: "Ready: " in supervisor.output(), "Ready line")
    master = supervisor.pid("gateway")
    workers = wait_until(lambda: children_of(master), "gunicorn worker")

    os.kill(master, signal.SIGKILL)
    killed_at = time.monotonic()

    new_master = supervisor.pid("gateway", other_than=master)
    wait_dead(workers)  # the old workers no longer answer for it
    wait_for_http(f"{url}/readyz", GATEWAY_START_S, supervisor.process)
    recovery_s = time.monotonic() - killed_at
    print(f"gateway answered /readyz again {recovery_s:.2f} s after its master was SIGKILLed")

    assert is_alive(new_master)
    assert "Address already in use" not in supervisor.log("gateway")
    assert supervisor.stop() == 0
    wait_dead([new_master])


@pytest.mark.system
def test_a_restarted_gateway_binds_while_a_worker_of_the_killed_one_still_holds_the_port(
    s3_settings, models_dir, tmp_path
):
    """Without the supervisor's clean-up: the old worker is frozen (SIGSTOP), as if busy finishing
    requests; SO_REUSEPORT lets the new gateway bind next to it."""
    port = free_port()
    env = {**os.environ, **gateway_env(s3_settings, models_dir, port)}
    argv = [sys.executable, "-m", "services.gateway"]
    logs = [(tmp_path / f"gateway-{index}.log").open("wb") for index in (1, 2)]
    old = subprocess.Popen(argv, env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    new: subprocess.Popen[bytes] | None = None
    stuck_workers: list[int] = []
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", GATEWAY_START_S, old)
        stuck_workers = wait_until(lambda: children_of(old.pid), "gunicorn worker")
        for worker in stuck_workers:
            os.kill(worker, signal.SIGSTOP)
        old.kill()
        old.wait(timeout=WAIT_S)

        new = subprocess.Popen(argv, env=env, stdout=logs[1], stderr=subprocess.STDOUT)
        new_workers = wait_until(lambda: children_of(new.pid), "new gunicorn worker")
        # Connections the kernel hands to the frozen worker's socket go unanswered: retry them.
        wait_for_http(f"http://127.0.0.1:{port}/readyz", GATEWAY_START_S, new)
        assert new.poll() is None and all(map(is_alive, new_workers))
        assert "Address already in use" not in (tmp_path / "gateway-2.log").read_text()
    finally:
        for worker in stuck_workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        for process in (old, new):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=WAIT_S)
        for log in logs:
            log.close()
