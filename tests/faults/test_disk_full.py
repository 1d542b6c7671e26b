"""The filesystem store's disk fills up: 503 meanwhile, nothing half-written, recovery after.

The store lives on a small tmpfs mounted for the test (tests run as root here and in CI;
a test that cannot mount fails rather than skips). The broker is the machine's RabbitMQ,
under the test's own namespace.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.images import solid_jpeg
from tests.support.load import account_for
from tests.support.system import RunningSystem, settings_env

TMPFS_SIZE = "16m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "store"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Write one file until the disk refuses more; return it (deleting it frees the space)."""
    filler = disk / "filler"
    with filler.open("wb") as handle:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass
    return filler


def post(url: str, *, wait: bool = True) -> requests.Response:
    query = "" if wait else "?wait=false"
    files = {"file": ("lesion.jpg", solid_jpeg(230, size=(256, 256)), "image/jpeg")}
    return requests.post(f"{url}/api/v1/predictions{query}", files=files, timeout=30)


def leftovers(disk: Path) -> list[str]:
    return [path.name for path in disk.rglob(".tmp-*")]


def test_a_full_disk_gets_503_leaves_nothing_half_written_and_recovers(
    small_disk: Path, namespace: str, amqp_url: str, models_dir: Path, output_dir: Path
) -> None:
    env = settings_env(
        amqp_url=amqp_url, broker_namespace=namespace, store_dir=small_disk, models_dir=models_dir, predict_timeout_s=5
    )
    log_dir = output_dir / "logs" / "disk-full"
    log_dir.mkdir(parents=True, exist_ok=True)
    system = RunningSystem(env, log_dir)
    try:
        worker = system.start_worker()
        system.start_gateway()
        assert post(system.gateway_url).status_code == 200

        worker.process.send_signal(signal.SIGSTOP)  # its jobs' results will meet the full disk
        queued = [post(system.gateway_url, wait=False).json()["id"] for _ in range(10)]
        filler = fill(small_disk)
        refused = post(system.gateway_url)
        ready = requests.get(f"{system.gateway_url}/readyz", timeout=10)
        worker.process.send_signal(signal.SIGCONT)
        time.sleep(3)
        pending_while_full = [
            requests.get(f"{system.gateway_url}/api/v1/predictions/{job_id}", timeout=10).json()["status"]
            for job_id in queued
        ]
        half_written = leftovers(small_disk)

        filler.unlink()
        deadline = time.monotonic() + 30
        while (answer := post(system.gateway_url)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        final = account_for(system.gateway_url, set(queued), timeout_s=60)
        alive = [service.name for service in system.services if service.process.poll() is None]
    finally:
        system.stop()

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "storage_unavailable"
    assert refused.headers["Retry-After"]
    assert ready.status_code == 503 and "full" in ready.json()["checks"]["storage"]
    assert half_written == []
    assert pending_while_full == ["pending"] * 10
    assert answer.status_code == 200, answer.text
    assert sorted(final["done"]) == sorted(queued)
    assert alive == ["worker-1", "gateway"]
