"""The system under benchmark: gateway and workers as processes, and where their CPU goes.

Starts everything in a fresh broker namespace and a temporary store, stops it all (every
wait has a timeout), deletes the namespace's queues, and reads per-process CPU time from
/proc so each load level can say what used the machine.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from shared.errors import SkinLesionError
from shared.messaging.rabbitmq import CONNECTION_ERRORS, close_quietly, connect
from shared.messaging.topology import Topology
from shared.settings import REPO_ROOT, Settings

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class System:
    """Where the running system answers, and which process groups are its parts."""

    url: str
    worker_metrics_urls: list[str]
    process_groups: dict[str, list[int]]


@contextmanager
def running_system(models: Path, workers: int, batch_size: int, store_dir: Path, log_dir: Path) -> Iterator[System]:
    """Gateway + `workers` workers as processes in a fresh namespace; everything is stopped
    and the namespace's queues deleted on the way out, whatever happened."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}."
    base_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "MODELS_DIR": str(models),
        "STORE_DIR": str(store_dir),
        "BROKER_NAMESPACE": namespace,
        "WORKER_MAX_BATCH": str(batch_size),
    }
    http_port = free_port()
    metrics_ports = [free_port() for _ in range(workers)]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for index, port in enumerate(metrics_ports):
            env = {**base_env, "WORKER_METRICS_PORT": str(port)}
            processes[f"worker{index}"] = _spawn("services.worker", env, log_dir / f"worker{index}.log")
        processes["gateway"] = _spawn(
            "services.gateway", {**base_env, "HTTP_PORT": str(http_port)}, log_dir / "gateway.log"
        )
        system = System(
            url=f"http://127.0.0.1:{http_port}",
            worker_metrics_urls=[f"http://127.0.0.1:{port}" for port in metrics_ports],
            process_groups={
                "gateway": [processes["gateway"].pid],
                "workers": [p.pid for name, p in processes.items() if name.startswith("worker")],
                "broker": _broker_process_groups(),
            },
        )
        _wait_ready([system.url, *system.worker_metrics_urls], processes, log_dir)
        yield system
    finally:
        for process in processes.values():
            _stop(process)
        try:
            _delete_namespace(namespace)
        except (SkinLesionError, *CONNECTION_ERRORS) as error:
            print(f"could not delete the queues of {namespace}: {error!r}", file=sys.stderr)


def _spawn(module: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    # A session of its own: gunicorn forks, and the whole group is stopped (and measured) by id.
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_ready(urls: list[str], processes: dict[str, subprocess.Popen[bytes]], log_dir: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(urls)
    while pending:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log_dir}/{name}.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f}s: {pending}; logs in {log_dir}")
        pending = [url for url in pending if not _is_ready(url)]
        time.sleep(0.5)


def _is_ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group, then SIGKILL it if it has not gone within the timeout."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # also any gunicorn child left behind
    except ProcessLookupError:
        return
    process.wait(STOP_TIMEOUT_S)


def _namespace_queues(topology: Topology) -> list[str]:
    """Every queue the topology names (each `*_queue` property) and their dead-letter queues.

    Read from the class rather than listed here, so queues added to the topology later are
    cleaned up too; deleting a queue that was never declared is a no-op for RabbitMQ.
    """
    names = [
        getattr(topology, name)
        for name, value in vars(Topology).items()
        if name.endswith("_queue") and isinstance(value, property)
    ]
    related = (Topology.dead_letter_queue, Topology.dead_letter_notices_queue)
    return [queue for name in names for queue in (name, *(related_name(name) for related_name in related))]


def _delete_namespace(namespace: str) -> None:
    topology = Topology.from_settings(Settings(broker_namespace=namespace))
    connection = connect(Settings.from_env().amqp_url, timeout_s=10)
    try:
        channel = connection.channel()
        for queue in _namespace_queues(topology):
            channel.queue_delete(queue)
        channel.exchange_delete(topology.events_exchange)
        channel.exchange_delete(topology.dead_letter_exchange)
    finally:
        close_quietly(connection)


# CPU accounting: where the two cores went during a level


def _group_cpu_s(leaders: list[int]) -> float:
    """User + system CPU seconds of every live process in the groups led by `leaders`."""
    wanted = set(leaders)
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[2]) in wanted:  # fields[2] is the process group id
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def _broker_process_groups() -> list[int]:
    """Process groups of the local RabbitMQ (Erlang's `beam.smp`): part of the system's cost."""
    groups = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "beam.smp":
                groups.append(int((comm.parent / "stat").read_text().rsplit(")", 1)[1].split()[2]))
        except OSError:
            continue
    return groups


def _machine_busy_s() -> float:
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_snapshot(system: System) -> dict[str, float]:
    snapshot = {name: _group_cpu_s(pids) for name, pids in system.process_groups.items()}
    return snapshot | {"clients": _self_cpu_s(), "machine": _machine_busy_s()}


def cpu_percent(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    used = {name: 100 * (after[name] - before[name]) / seconds for name in before}
    used["other"] = used.pop("machine") - sum(used.values())
    return used


# Memory: peak resident set sizes


def _group_memory_mb(leaders: list[int], field: str) -> list[float]:
    """`field` of /proc/*/status (VmHWM: peak RSS, VmRSS: RSS now) in MB of every live process
    in the groups led by `leaders`."""
    wanted, sizes = set(leaders), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) not in wanted:
                continue
            status = (stat.parent / "status").read_text()
        except OSError:
            continue  # the process ended while we looked
        for line in status.splitlines():
            if line.startswith(f"{field}:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def peak_rss_mb(system: System) -> dict[str, float]:
    """The gateway's processes' peaks summed (an upper bound of its peak), and the largest worker's."""
    workers = [peak for pid in system.process_groups["workers"] for peak in _group_memory_mb([pid], "VmHWM")]
    gateway = sum(_group_memory_mb(system.process_groups["gateway"], "VmHWM"))
    return {"gateway": gateway, "worker": max(workers, default=0.0)}


def gateway_rss_mb(system: System) -> float:
    """Resident memory of the gateway's processes together, now."""
    return sum(_group_memory_mb(system.process_groups["gateway"], "VmRSS"))


# Workers' batching, from their /metrics


def batch_totals(system: System) -> tuple[float, float]:
    """(images, batches) summed over the workers' slc_worker_batch_size histograms."""
    images = batches = 0.0
    for url in system.worker_metrics_urls:
        for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
            if line.startswith("slc_worker_batch_size_sum"):
                images += float(line.split()[-1])
            elif line.startswith("slc_worker_batch_size_count"):
                batches += float(line.split()[-1])
    return images, batches


# Closed-loop clients
