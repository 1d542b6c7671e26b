"""Start the gateway and workers as real processes, the way `make run` does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shared.settings import REPO_ROOT, Settings
from tests.support.network import free_port, wait_for_http

START_TIMEOUT_S = 60


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen
    log_path: Path
    port: int

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 20) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@dataclass
class RunningSystem:
    """A gateway and workers sharing one environment (broker namespace, store, models)."""

    env: dict[str, str]
    log_dir: Path
    services: list[ServiceProcess] = field(default_factory=list)
    gateway_url: str = ""

    def _spawn(
        self, name: str, module: str, extra_env: dict[str, str], port: int, args: tuple[str, ...] = ()
    ) -> ServiceProcess:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env={**os.environ, **self.env, **extra_env, "PYTHONPATH": str(REPO_ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        service = ServiceProcess(name, process, log_path, port)
        self.services.append(service)
        return service

    def start_gateway(self) -> ServiceProcess:
        port = free_port()
        gateway = self._spawn("gateway", "services.gateway", {"HTTP_PORT": str(port)}, port)
        self.gateway_url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{self.gateway_url}/readyz", START_TIMEOUT_S, gateway.process)
        return gateway

    def start_worker(self, **extra_env: str) -> ServiceProcess:
        port = free_port()
        name = f"worker-{len([s for s in self.services if s.name.startswith('worker')]) + 1}"
        worker = self._spawn(name, "services.worker", {"WORKER_METRICS_PORT": str(port), **extra_env}, port)
        wait_for_http(f"http://127.0.0.1:{port}/readyz", START_TIMEOUT_S, worker.process)
        return worker

    def start_service(self, name: str, module: str, port_setting: str, *args: str) -> ServiceProcess:
        """Start a service that serves /readyz on the port named by `port_setting`."""
        port = free_port()
        service = self._spawn(name, module, {port_setting.upper(): str(port)}, port, args)
        wait_for_http(f"http://127.0.0.1:{port}/readyz", START_TIMEOUT_S, service.process)
        return service

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


@contextmanager
def running_system(
    env: dict[str, str], log_dir: Path, *, worker: bool = False, gateway: bool = False
) -> Iterator[RunningSystem]:
    """A RunningSystem logging into `log_dir` (created), with a worker and a gateway started
    when asked; whatever was started is stopped on the way out."""
    log_dir.mkdir(parents=True, exist_ok=True)
    running = RunningSystem(env, log_dir)
    try:
        if worker:
            running.start_worker()
        if gateway:
            running.start_gateway()
        yield running
    finally:
        running.stop()


def settings_env(**values: object) -> dict[str, str]:
    """Environment variables for Settings fields given as keyword arguments."""
    return {name.upper(): str(value) for name, value in values.items()}


def system_env(settings: Settings, models_dir: Path | None = None, **extra: object) -> dict[str, str]:
    """The environment that points a service at the test's broker namespace and S3 store."""
    connection = {
        "amqp_url": settings.amqp_url,
        "broker_namespace": settings.broker_namespace,
        "s3_endpoint": settings.s3_endpoint,
        "s3_access_key": settings.s3_access_key,
        "s3_secret_key": settings.s3_secret_key,
        "s3_bucket_prefix": settings.s3_bucket_prefix,
    }
    if models_dir is not None:
        connection["models_dir"] = models_dir
    return settings_env(**connection, **extra)
