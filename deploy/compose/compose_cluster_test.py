"""`make compose-cluster-test`: the stack on a 3-node RabbitMQ cluster, one node killed under load.

In a compose project of its own (`slc-compose-cluster-test`, never `slc` nor `slc-compose-test`):

1. the machinery of compose_test.py: Docker installed and started when missing, the air-gapped
   images built, free 127.0.0.1 ports, fresh secrets (plus the cluster's Erlang cookie);
2. starts the stack with docker-compose.cluster.yml on top (three RabbitMQ nodes from the same
   image, the app services given all three in AMQP_URL) from empty volumes with two workers,
   and waits until every container is healthy;
3. checks that the three nodes form one cluster and that the `predict` quorum queue has a
   member on each;
4. while 4 synchronous clients and 10 `?wait=false` posts a second go on, SIGKILLs the node
   that leads `predict` (after flushing its disk tables, see `flush_to_disk`), keeps the load
   going for NODE_DOWN_S, starts the node again and waits until it runs in the cluster and its
   queue member is online again;
5. polls every id the gateway accepted: all must end `done`; no 500; no app container restarted;
6. `down -v` at the end, also after a failure, Ctrl-C or SIGTERM.

Standard library only (like compose_test.py, whose helpers it imports). Progress goes to
stderr; the last line on stdout is JSON (requests_by_status, accepted, done, rejoin_s, ...).
Exit status 0 only if every check passed.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import compose_test as base

PROJECT = "slc-compose-cluster-test"
CLUSTER_FILE = "docker-compose.cluster.yml"
OUTPUT_DIR = base.REPO / "test-output/compose-cluster-test"
# Compose service -> the RabbitMQ node it runs (docker-compose.cluster.yml).
NODE_SERVICES = {"rabbitmq": "rabbit@rabbitmq-1", "rabbitmq-2": "rabbit@rabbitmq-2", "rabbitmq-3": "rabbit@rabbitmq-3"}
APP_SERVICES = ("gateway", "worker", "trainer", "insights")
PREDICT_QUEUE = "predict"  # Settings.predict_queue's default; the stack does not change it

WORKERS = 2
SYNC_CLIENTS = 4
ASYNC_PER_S = 10.0
WARMUP_S = 10  # load before the kill, so that every client holds a connection somewhere
NODE_DOWN_S = 20
AFTER_REJOIN_S = 5
# Bounds of the waits (seconds).
REJOIN_TIMEOUT_S = 120
ACCOUNTING_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 30


def log(message: str) -> None:
    print(f"[compose-cluster-test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- load through the gateway ----------------------------------------------------------------------


@dataclass
class LoadRecord:
    """What the clients saw (guarded by `lock`), as tests/support/load.py records it.

    "Accepted" means the gateway gave out an id it promised to answer: a 200 (answered now), a
    202 (queued) or a 504 (queued, answer late). A 503 is a refusal: nothing was taken.
    """

    statuses: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    # (monotonic time, status) of every synchronous answer, to see predictions go on.
    sync_answers: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def successes_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for at, status in self.sync_answers if status == 200 and start <= at < end)

    def first_success_after(self, moment: float) -> float | None:
        with self.lock:
            times = [at for at, status in self.sync_answers if status == 200 and at >= moment]
        return min(times) - moment if times else None


class Load:
    """SYNC_CLIENTS threads predicting in a loop, plus ASYNC_PER_S `?wait=false` posts a second."""

    def __init__(self, stack: base.Stack) -> None:
        self.stack = stack
        self.record = LoadRecord()
        self._stopping = threading.Event()
        # A few distinct images made once: making one costs more CPU than sending it.
        self._images = [base.png(seed, brightness=100 + 10 * seed) for seed in range(8)]
        self._threads = [
            threading.Thread(target=self._sync_client, args=(index,), daemon=True) for index in range(SYNC_CLIENTS)
        ]
        self._threads.append(threading.Thread(target=self._async_submitter, daemon=True))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)

    def _sync_client(self, index: int) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            if self._post(wait=True, image=index) is None:
                # Refused or unreachable: back off a little, as a polite client would.
                self._stopping.wait(max(0.2 - (time.monotonic() - started), 0.05))

    def _async_submitter(self) -> None:
        interval_s = 1.0 / ASYNC_PER_S
        next_at = time.monotonic()
        sent = 0
        while not self._stopping.wait(max(next_at - time.monotonic(), 0)):
            next_at += interval_s
            sent += 1
            self._post(wait=False, image=sent)

    def _post(self, *, wait: bool, image: int) -> str | None:
        """One prediction request; the accepted id, or None when nothing was accepted."""
        data = self._images[image % len(self._images)]
        try:
            answer = base.predict(self.stack, [("lesion.png", data)], wait=wait)
            ids = accepted_ids(answer)
        except (OSError, ValueError) as error:
            with self.record.lock:
                self.record.statuses[f"connection error ({type(error).__name__})"] += 1
            return None
        with self.record.lock:
            self.record.statuses[str(answer.status)] += 1
            self.record.accepted.update(ids)
            if wait:
                self.record.sync_answers.append((time.monotonic(), answer.status))
        return ids[0] if ids else None


def accepted_ids(answer: base.Response) -> list[str]:
    if answer.status in (200, 202):
        return [answer.json()["id"]]
    if answer.status == 504:
        return list(answer.json()["error"]["ids"])
    return []


def account_for(stack: base.Stack, ids: set[str]) -> dict[str, list[str]]:
    """Poll every id until it is done or failed, or ACCOUNTING_TIMEOUT_S passes; ids by final status."""
    deadline = time.monotonic() + ACCOUNTING_TIMEOUT_S
    outstanding = set(ids)
    final: dict[str, list[str]] = {"done": [], "failed": []}
    while outstanding and time.monotonic() < deadline:
        for job_id in sorted(outstanding):
            try:
                status = base.http("GET", f"{stack.gateway}/api/v1/predictions/{job_id}", timeout_s=10).json()["status"]
            except (OSError, ValueError, KeyError):
                continue
            if status in final:
                final[status].append(job_id)
                outstanding.discard(job_id)
        if outstanding:
            time.sleep(0.5)
    final["not finished"] = sorted(outstanding)
    return final


# --- the cluster, asked through rabbitmqctl in a node's container ------------------------------------


def node_containers(stack: base.Stack) -> dict[str, dict[str, Any]]:
    """Node name -> `docker inspect` of the container that runs it."""
    return {
        NODE_SERVICES[service]: container
        for container in stack.containers()
        if (service := container["Config"]["Labels"]["com.docker.compose.service"]) in NODE_SERVICES
    }


def rabbitmqctl(stack: base.Stack, *args: str, avoid: str | None = None) -> Any:
    """A JSON-formatted rabbitmqctl command run on a running node other than `avoid`."""
    for node, container in node_containers(stack).items():
        if node != avoid and container["State"]["Running"]:
            output = base.run(["docker", "exec", container["Id"], "rabbitmqctl", "-q", *args, "--formatter", "json"])
            return json.loads(output)
    raise base.CheckFailed("no RabbitMQ node runs")


def running_nodes(stack: base.Stack, avoid: str | None = None) -> set[str]:
    return set(rabbitmqctl(stack, "cluster_status", avoid=avoid)["running_nodes"])


def predict_queue(stack: base.Stack, avoid: str | None = None) -> dict[str, Any]:
    """The `predict` queue's type, leader, members and online members."""
    rows = rabbitmqctl(stack, "list_queues", "name", "type", "leader", "members", "online", avoid=avoid)
    matches = [row for row in rows if row["name"] == PREDICT_QUEUE]
    if not matches:
        raise base.NotYet(f"no queue {PREDICT_QUEUE!r} on the cluster")
    return matches[0]


def connections_by_node(stack: base.Stack) -> dict[str, int]:
    """Open client connections on each node, told apart by the server address they came in on."""
    containers = node_containers(stack)
    by_address = {
        network["IPAddress"]: node
        for node, container in containers.items()
        for network in container["NetworkSettings"]["Networks"].values()
    }
    counts = dict.fromkeys(containers, 0)
    for row in rabbitmqctl(stack, "list_connections", "host"):
        counts[by_address[ip_address(row["host"])]] += 1
    return counts


def ip_address(value: str | list[int]) -> str:
    """A connection's server address, as rabbitmqctl's JSON gives it, in the dotted form Docker reports.

    It comes as a string or as Erlang's tuple of 4 or 8 numbers; the nodes listen on IPv6 too, so
    an IPv4 client's connection shows as ::ffff:a.b.c.d.
    """
    if isinstance(value, list):
        value = ".".join(map(str, value)) if len(value) == 4 else ":".join(f"{part:x}" for part in value)
    address = ipaddress.ip_address(value)
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return str(mapped or address)


def flush_to_disk(stack: base.Stack, node: str) -> None:
    """Write the node's disk tables now rather than at their next periodic save.

    Ra (the quorum queues' Raft library) keeps which queues a node serves in a `dets` table that
    is saved every few minutes: a node SIGKILLed within minutes of the queues' declaration could
    come back without its members. A real crash can hit that window; this test wants to see the
    cluster carry on and the node rejoin, so it closes the window first.
    """
    container = node_containers(stack)[node]["Id"]
    base.run(["docker", "exec", container, "rabbitmqctl", "eval", "[dets:sync(T) || T <- dets:all()]."])


def wait_for_rejoin(stack: base.Stack, node: str, started: float) -> tuple[float, float]:
    """Seconds from `started` until `node` runs in the cluster, and until its queue member is online."""
    base.wait_for(f"{node} to run in the cluster", lambda: node in running_nodes(stack, avoid=node), REJOIN_TIMEOUT_S)
    rejoin_s = time.monotonic() - started

    def member_online() -> bool:
        return sorted(predict_queue(stack)["online"]) == sorted(NODE_SERVICES.values())

    base.wait_for(f"{node}'s {PREDICT_QUEUE} member to be online", member_online, REJOIN_TIMEOUT_S)
    return rejoin_s, time.monotonic() - started


def restart_counts(stack: base.Stack) -> dict[str, int]:
    return {
        container["Name"].lstrip("/"): container["RestartCount"]
        for container in stack.containers()
        if container["Config"]["Labels"]["com.docker.compose.service"] in APP_SERVICES
    }


# --- the run ------------------------------------------------------------------------------------------


def start_cluster_stack(stack: base.Stack, report: dict[str, Any]) -> None:
    """From empty volumes: up with WORKERS workers, every container healthy, one cluster of three."""
    stack.down()  # leftovers of an interrupted earlier run of this project
    started = time.monotonic()
    stack.compose("up", "-d", "--scale", f"worker={WORKERS}", timeout_s=600)
    expected = {**base.expected_services(stack, workers=WORKERS), "rabbitmq-2": 1, "rabbitmq-3": 1}
    base.wait_healthy(stack, expected)
    report["ready_s"] = round(time.monotonic() - started, 1)
    log(f"every container healthy after {report['ready_s']} s")
    nodes = running_nodes(stack)
    if nodes != set(NODE_SERVICES.values()):
        raise base.CheckFailed(f"the cluster runs {sorted(nodes)}, not the three nodes")
    base.check_sync_prediction(stack, seed=1)  # declares nothing new: the services did at start
    queue = base.wait_for(f"the {PREDICT_QUEUE} queue", lambda: predict_queue(stack), 30)
    report["queue_members"] = sorted(queue["members"])
    if queue["type"] != "quorum" or sorted(queue["members"]) != sorted(NODE_SERVICES.values()):
        raise base.CheckFailed(f"{PREDICT_QUEUE} is not a quorum queue on the three nodes: {queue}")
    log(f"one cluster of {sorted(nodes)}; {PREDICT_QUEUE}: quorum, leader {queue['leader']}")


def kill_a_node_under_load(stack: base.Stack, report: dict[str, Any]) -> None:
    """The leader of `predict` SIGKILLed under load, down NODE_DOWN_S, started again; everything recorded."""
    restarts_before = restart_counts(stack)
    with Load(stack) as load:
        time.sleep(WARMUP_S)
        victim = str(predict_queue(stack)["leader"])
        victim_id = node_containers(stack)[victim]["Id"]
        connections = connections_by_node(stack)
        flush_to_disk(stack, victim)
        accepted_before = len(load.record.accepted)
        log(f"killing {victim} (connections by node: {connections})")
        base.run(["docker", "kill", "--signal", "KILL", victim_id])
        killed_at = time.monotonic()
        time.sleep(NODE_DOWN_S)
        running_while_down = running_nodes(stack, avoid=victim)
        queue_while_down = predict_queue(stack, avoid=victim)
        victim_state = node_containers(stack)[victim]["State"]["Status"]
        successes_while_down = load.record.successes_between(killed_at, time.monotonic())
        accepted_while_down = len(load.record.accepted) - accepted_before
        first_success = load.record.first_success_after(killed_at)
        log(f"while down: {successes_while_down} sync successes, {accepted_while_down} accepted; starting {victim}")
        started_at = time.monotonic()
        base.run(["docker", "start", victim_id])
        rejoin_s, member_online_s = wait_for_rejoin(stack, victim, started_at)
        log(
            f"{victim} runs in the cluster after {rejoin_s:.1f} s, its {PREDICT_QUEUE} member is online"
            f" after {member_online_s:.1f} s"
        )
        time.sleep(AFTER_REJOIN_S)
    log(f"load stopped: {dict(load.record.statuses)}; polling {len(load.record.accepted)} accepted ids")
    final = account_for(stack, load.record.accepted)
    queue_after = predict_queue(stack)
    report.update(
        killed=victim,
        connections_by_node_before_kill=connections,
        node_down_s=NODE_DOWN_S,
        first_success_after_kill_s=None if first_success is None else round(first_success, 2),
        sync_successes_while_down=successes_while_down,
        accepted_while_down=accepted_while_down,
        running_while_down=sorted(running_while_down),
        new_leader=queue_while_down["leader"],
        rejoin_s=round(rejoin_s, 1),
        queue_member_online_again_s=round(member_online_s, 1),
        requests_by_status=dict(load.record.statuses),
        accepted=len(load.record.accepted),
        done=len(final["done"]),
        failed=len(final["failed"]),
        not_finished=len(final["not finished"]),
    )
    problems = [
        f"{len(final['not finished'])} accepted jobs never finished" if final["not finished"] else "",
        f"{len(final['failed'])} accepted jobs failed" if final["failed"] else "",
        f"500 answers: {load.record.statuses['500']}" if load.record.statuses["500"] else "",
        f"app containers restarted: {restart_counts(stack)}" if restart_counts(stack) != restarts_before else "",
        # The kill must hit clients too, not only the queue: they move to the other nodes.
        f"no client was connected to {victim}: {connections}" if connections[victim] == 0 else "",
        f"{victim} was {victim_state} while it should be down" if victim_state == "running" else "",
        f"running while down: {sorted(running_while_down)}" if len(running_while_down) != 2 else "",
        f"{PREDICT_QUEUE} kept its dead leader" if queue_while_down["leader"] == victim else "",
        "no synchronous prediction succeeded while the node was down" if successes_while_down == 0 else "",
        "nothing was accepted while the node was down" if accepted_while_down == 0 else "",
        f"{PREDICT_QUEUE} after the rejoin: {queue_after}" if len(queue_after["online"]) != 3 else "",
    ]
    if any(problems):
        raise base.CheckFailed("; ".join(problem for problem in problems if problem))


def exercise(stack: base.Stack, report: dict[str, Any]) -> None:
    """Everything after the install; fills `report` as it goes, so a failure still reports what passed."""
    report["build_s"] = round(base.build(stack), 1)
    log(f"built in {report['build_s']} s")
    start_cluster_stack(stack, report)
    kill_a_node_under_load(stack, report)
    log(f"nothing lost: {report['done']} of {report['accepted']} accepted jobs done")


def cluster_stack(workdir: Path) -> base.Stack:
    """compose_test's Stack in this project, with the cluster file and its Erlang cookie."""
    stack = base.Stack(
        airgap=True, workdir=workdir, project=PROJECT, extra_compose_files=(CLUSTER_FILE,), output_dir=OUTPUT_DIR
    )
    stack.settings["RABBITMQ_CLUSTER_COOKIE"] = secrets.token_hex(24)
    stack.env.pop("RABBITMQ_CLUSTER_COOKIE", None)  # the caller's environment would win over the file
    stack.env_file.write_text("".join(f"{name}={value}\n" for name, value in stack.settings.items()))
    return stack


def main() -> int:
    return base.run_reported(cluster_stack, exercise, {"ok": False, "project": PROJECT}, airgap=True)


if __name__ == "__main__":
    sys.exit(main())
