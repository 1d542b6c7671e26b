"""A RabbitMQ cluster owned by one test: three `RabbitNode`s joined into one broker.

The nodes share an Erlang cookie and run on this machine under their own names and ports.
The first node founds the cluster; the others `join_cluster` it. A node that is killed and
started again keeps its data directory, so it remembers the cluster and rejoins by itself,
as a pod of a StatefulSet does.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.rabbitmq_node import RabbitNode

CLUSTER_TIMEOUT_S = 120


class RabbitCluster:
    """`size` nodes under `base_dir`; `amqp_url` lists them all, as `AMQP_URL` does for a cluster."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        cookie = uuid.uuid4().hex.upper()
        self.nodes = [RabbitNode(base_dir / f"node{index}", cookie=cookie) for index in range(size)]

    @property
    def amqp_url(self) -> str:
        return ",".join(node.amqp_url for node in self.nodes)

    def start(self) -> None:
        """Start every node (at once: each takes seconds), join the others to the first, wait for all."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(), self.nodes))
        founder = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", founder.node_name)
            node.ctl("start_app")
        self.wait_for_running(len(self.nodes))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def any_running_node(self) -> RabbitNode:
        return next(node for node in self.nodes if node.running)

    def node_named(self, name: str) -> RabbitNode:
        return next(node for node in self.nodes if node.node_name == name)

    def running_node_names(self) -> set[str]:
        """Nodes the cluster itself reports as running (asked of a live node)."""
        status = json.loads(self.any_running_node().ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def wait_for_running(self, count: int, timeout_s: float = CLUSTER_TIMEOUT_S) -> float:
        """Seconds until the cluster reports `count` running nodes; TimeoutError past `timeout_s`."""
        started = time.monotonic()
        while (running := self.running_node_names()) and len(running) != count:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"the cluster runs {sorted(running)}, not {count} nodes, after {timeout_s}s")
            time.sleep(1)
        return time.monotonic() - started

    def connections_by_node(self) -> dict[str, int]:
        """Open client connections on each node, told apart by the AMQP port they came in on."""
        rows = json.loads(self.any_running_node().ctl("list_connections", "port", "--formatter", "json"))
        by_port = {node.amqp_port: node.node_name for node in self.nodes}
        counts = dict.fromkeys(by_port.values(), 0)
        for row in rows:
            counts[by_port[row["port"]]] += 1
        return counts

    def quorum_queue(self, queue: str) -> dict[str, object]:
        """The queue's type, leader, members and online members, as a live node reports them."""
        rows = json.loads(
            self.any_running_node().ctl(
                "list_queues", "name", "type", "leader", "members", "online", "--formatter", "json"
            )
        )
        matches = [row for row in rows if row["name"] == queue]
        if not matches:
            raise LookupError(f"no queue {queue!r} on the cluster")
        return matches[0]

    def wait_for_online_members(self, queue: str, count: int, timeout_s: float = CLUSTER_TIMEOUT_S) -> float:
        """Seconds until `count` members of the quorum queue are online; TimeoutError past `timeout_s`."""
        started = time.monotonic()
        while len(self.quorum_queue(queue)["online"]) != count:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{queue}: {self.quorum_queue(queue)} after {timeout_s}s")
            time.sleep(1)
        return time.monotonic() - started
