"""A worker and the gateway SIGKILLed under load; the supervisor of `make run` brings them back.

Two workers and a gateway run under deploy/local/supervise.py, against the machine's RabbitMQ
(the test's namespace) and the suite's S3 server. Every id the gateway accepted must end `done`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared.settings import REPO_ROOT, Settings
from tests.support.images import solid_jpeg
from tests.support.load import Load, account_for
from tests.support.network import free_port, wait_for_http
from tests.support.supervisor import Supervised, wait_until
from tests.support.system import system_env

START_TIMEOUT_S = 90
RECOVERY_BOUND_S = 20


@pytest.fixture
def supervisor(s3_settings: Settings, models_dir: Path, tmp_path: Path) -> Iterator[tuple[Supervised, str]]:
    port = free_port()
    python = shlex.quote(sys.executable)
    services = {
        "worker-1": f"WORKER_METRICS_PORT={free_port()} {python} -m services.worker",
        "worker-2": f"WORKER_METRICS_PORT={free_port()} {python} -m services.worker",
        "gateway": f"{python} -m services.gateway",
    }
    env = {**system_env(s3_settings, models_dir, http_port=port, predict_timeout_s=5), "PYTHONPATH": str(REPO_ROOT)}
    supervised = Supervised(tmp_path / "supervisor", services, "--backoff-initial", "0.5", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/readyz", START_TIMEOUT_S, supervised.process)
        yield supervised, url
    finally:
        if supervised.stop(timeout_s=60) != 0:
            pytest.fail("the supervisor did not stop cleanly")


def wait_for_success(url: str, since: float) -> float:
    """Seconds from `since` until a synchronous prediction succeeds through `url`."""

    def succeeded() -> bool:
        try:
            files = {"file": ("probe.jpg", solid_jpeg(20), "image/jpeg")}
            return requests.post(f"{url}/api/v1/predictions", files=files, timeout=10).status_code == 200
        except requests.RequestException:
            return False

    wait_until(succeeded, "a successful prediction", timeout_s=RECOVERY_BOUND_S + 30)
    return time.monotonic() - since


def test_a_worker_and_the_gateway_sigkilled_under_load_come_back_and_lose_no_accepted_job(
    supervisor: tuple[Supervised, str], output_dir: Path
) -> None:
    supervised, url = supervisor
    with Load(url) as load:
        time.sleep(3)
        worker = supervised.pid("worker-1")
        os.kill(worker, signal.SIGKILL)
        supervised.pid("worker-1", other_than=worker)
        time.sleep(3)
        gateway = supervised.pid("gateway")
        os.kill(gateway, signal.SIGKILL)
        killed_at = time.monotonic()
        supervised.pid("gateway", other_than=gateway)
        gateway_recovery_s = wait_for_success(url, killed_at)
        time.sleep(3)
    final = account_for(url, load.record.accepted, timeout_s=120)
    figures = {
        "gateway_recovery_s": round(gateway_recovery_s, 2),
        "requests_by_status": dict(load.record.statuses),
        "accepted": len(load.record.accepted),
        "done": len(final["done"]),
    }
    (output_dir / "faults").mkdir(exist_ok=True)
    (output_dir / "faults" / "process_kills.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"process_kills: {json.dumps(figures, sort_keys=True)}")

    assert final["not finished"] == [] and final["failed"] == [], final
    assert "500" not in load.record.statuses
    assert supervised.log("worker-1").count("--- supervise: starting") == 2
    assert supervised.log("gateway").count("--- supervise: starting") == 2
    assert gateway_recovery_s <= RECOVERY_BOUND_S
