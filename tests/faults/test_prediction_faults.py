"""Faults under load, with every accepted prediction accounted for.

Each test runs a gateway and two workers against a broker and an S3 server of its own, which
it kills: 4 synchronous clients and 10 `?wait=false` posts a second keep going through the
fault, and afterwards every id the gateway accepted (200, 202 or 504) must end `done`. Each
test writes its figures to test-output/faults/<test>.json.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support.broker import message_count
from tests.support.load import Load, LoadRecord, account_for
from tests.support.rabbitmq_node import RabbitNode
from tests.support.seaweedfs import SeaweedS3
from tests.support.system import RunningSystem, ServiceProcess

BACKLOG = 600
STORE_OUTAGE_S = 30
# The targets are 10 s; these bounds leave room for a slow CI machine, and each test
# reports what it measured.
RECOVERY_BOUND_S = 20
ACCOUNTING_TIMEOUT_S = 180


@pytest.fixture
def system(own_broker: RabbitNode, system_on_broker: Callable[[str], RunningSystem]) -> RunningSystem:
    return system_on_broker(own_broker.amqp_url)


def start_two_workers_and_a_gateway(system: RunningSystem) -> list[ServiceProcess]:
    workers = [system.start_worker(), system.start_worker()]
    system.start_gateway()
    return workers


def wait_for_recovery(record: LoadRecord, since: float) -> float:
    """Seconds from `since` to the first synchronous success; fails past the bound."""
    deadline = since + RECOVERY_BOUND_S + 10
    while (recovered := record.first_success_after(since)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recovered is not None, f"no successful prediction since the fault ended: {dict(record.statuses)}"
    return recovered


def report(output_dir: Path, name: str, figures: dict[str, object]) -> None:
    target = output_dir / "faults"
    target.mkdir(exist_ok=True)
    (target / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"{name}: {json.dumps(figures, sort_keys=True)}")


def assert_nothing_lost(system: RunningSystem, load: Load) -> dict[str, list[str]]:
    final = account_for(system.gateway_url, load.record.accepted, ACCOUNTING_TIMEOUT_S)
    assert final["not finished"] == [], f"{len(final['not finished'])} accepted jobs never finished"
    assert final["failed"] == [], f"{len(final['failed'])} accepted jobs failed"
    assert "500" not in load.record.statuses, dict(load.record.statuses)
    assert load.record.refusals_without_retry_after == 0
    dead = [service.name for service in system.services if service.process.poll() is not None]
    assert dead == [], f"processes exited: {dead}"
    return final


def test_a_broker_killed_with_a_backlog_loses_no_accepted_job(
    system: RunningSystem, own_broker: RabbitNode, output_dir: Path
) -> None:
    workers = start_two_workers_and_a_gateway(system)
    with Load(system.gateway_url) as load:
        time.sleep(3)
        for worker in workers:  # workers frozen: the burst piles up in the queue
            worker.process.send_signal(signal.SIGSTOP)
        backlog = load.burst(BACKLOG)
        queued_at_kill = message_count(own_broker.amqp_url, "predict")
        own_broker.kill()
        time.sleep(5)
        own_broker.start()
        returned_at = time.monotonic()
        for worker in workers:
            worker.process.send_signal(signal.SIGCONT)
        recovery_s = wait_for_recovery(load.record, returned_at)
        time.sleep(3)
    final = assert_nothing_lost(system, load)
    report(
        output_dir,
        "broker_restart",
        {
            "queued_at_kill": queued_at_kill,
            "burst_accepted": len(backlog),
            "recovery_s": round(recovery_s, 2),
            "requests_by_status": dict(load.record.statuses),
            "accepted": len(load.record.accepted),
            "done": len(final["done"]),
        },
    )
    assert queued_at_kill >= 500, f"only {queued_at_kill} jobs were queued at the kill"
    assert recovery_s <= RECOVERY_BOUND_S


def test_a_store_outage_gets_503_meanwhile_and_loses_no_accepted_job(
    system: RunningSystem, own_s3: SeaweedS3, output_dir: Path
) -> None:
    workers = start_two_workers_and_a_gateway(system)
    with Load(system.gateway_url) as load:
        time.sleep(3)
        own_s3.kill()
        time.sleep(3)
        gateway_ready = requests.get(f"{system.gateway_url}/readyz", timeout=10)
        worker_ready = requests.get(f"http://127.0.0.1:{workers[0].port}/readyz", timeout=10)
        statuses_before = sum(load.record.statuses.values())
        time.sleep(STORE_OUTAGE_S - 3)
        refused_meanwhile = sum(load.record.statuses.values()) - statuses_before
        own_s3.start()
        returned_at = time.monotonic()
        recovery_s = wait_for_recovery(load.record, returned_at)
        time.sleep(3)
    final = assert_nothing_lost(system, load)
    report(
        output_dir,
        "store_outage",
        {
            "outage_s": STORE_OUTAGE_S,
            "recovery_s": round(recovery_s, 2),
            "requests_by_status": dict(load.record.statuses),
            "requests_during_outage": refused_meanwhile,
            "accepted": len(load.record.accepted),
            "done": len(final["done"]),
        },
    )
    assert gateway_ready.status_code == 503 and gateway_ready.json()["checks"]["storage"] != "ok"
    assert worker_ready.status_code == 503 and worker_ready.json()["checks"]["storage"] != "ok"
    assert load.record.statuses["503"] > 0
    assert recovery_s <= RECOVERY_BOUND_S


def test_a_broker_that_blocks_publishers_gets_503_in_bounded_time_and_recovers(
    system: RunningSystem, own_broker: RabbitNode, output_dir: Path
) -> None:
    """A memory alarm: the broker stays up but takes no publishes (a slow broker, not a gone one)."""
    start_two_workers_and_a_gateway(system)
    with Load(system.gateway_url) as load:
        time.sleep(3)
        own_broker.ctl("set_vm_memory_high_watermark", "0")
        time.sleep(15)
        own_broker.ctl("set_vm_memory_high_watermark", "0.4")
        unblocked_at = time.monotonic()
        recovery_s = wait_for_recovery(load.record, unblocked_at)
        time.sleep(3)
    final = assert_nothing_lost(system, load)
    report(
        output_dir,
        "broker_blocked",
        {
            "blocked_s": 15,
            "recovery_s": round(recovery_s, 2),
            "requests_by_status": dict(load.record.statuses),
            "accepted": len(load.record.accepted),
            "done": len(final["done"]),
        },
    )
    assert load.record.statuses["503"] > 0
    assert not any(status.startswith("connection error") for status in load.record.statuses)
    assert recovery_s <= RECOVERY_BOUND_S
