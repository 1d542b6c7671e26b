"""A replicated broker: one node of a 3-node RabbitMQ cluster killed under load.

The gateway and two workers get `AMQP_URL` as the list of the three nodes. The test checks
that the `predict` quorum queue really has a member on every node, then SIGKILLs the node
that leads it (a service that declared it is connected there too) while 4 synchronous
clients and 10 `?wait=false` posts a second go on: predictions must keep succeeding through
the two other nodes while it is down, the node must rejoin the cluster (and the queue) when
started again, and every id the gateway accepted must end `done`. Figures go to
test-output/faults/broker_cluster_node_loss.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.messaging.topology import Topology
from shared.settings import Settings
from tests.faults.test_prediction_faults import assert_nothing_lost, report, start_two_workers_and_a_gateway
from tests.support.load import Load
from tests.support.rabbitmq_cluster import RabbitCluster
from tests.support.system import RunningSystem

NODES = 3
NODE_DOWN_S = 20
# Predictions must go on while the node is down; the first one after the kill may wait for
# the clients' reconnection and the quorum queue's leader election.
GOES_ON_BOUND_S = 15


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RabbitCluster]:
    """A started 3-node cluster of this test's own; stopped at teardown whatever happened."""
    broker = RabbitCluster(tmp_path / "rabbitmq", NODES)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def system(cluster: RabbitCluster, system_on_broker: Callable[[str], RunningSystem]) -> RunningSystem:
    return system_on_broker(cluster.amqp_url)


def successes_between(load: Load, start: float, end: float) -> int:
    with load.record.lock:
        return sum(1 for at, status in load.record.sync_answers if status == 200 and start <= at < end)


def test_a_cluster_node_killed_under_load_loses_no_accepted_job_and_rejoins(
    system: RunningSystem, cluster: RabbitCluster, output_dir: Path
) -> None:
    start_two_workers_and_a_gateway(system)
    predict_queue = Topology.from_settings(Settings()).predict_queue
    replicated = cluster.quorum_queue(predict_queue)
    assert replicated["type"] == "quorum"
    assert sorted(replicated["members"]) == sorted(node.node_name for node in cluster.nodes)
    victim = cluster.node_named(str(replicated["leader"]))
    with Load(system.gateway_url) as load:
        time.sleep(5)
        accepted_before_kill = len(load.record.accepted)
        connections_before_kill = cluster.connections_by_node()
        victim.kill()
        killed_at = time.monotonic()
        time.sleep(NODE_DOWN_S)
        running_while_down = cluster.running_node_names()
        queue_while_down = cluster.quorum_queue(predict_queue)
        recovered = load.record.first_success_after(killed_at)
        successes_while_down = successes_between(load, killed_at, time.monotonic())
        accepted_while_down = len(load.record.accepted) - accepted_before_kill
        victim.start()
        rejoin_s = cluster.wait_for_running(NODES)
        queue_rejoin_s = cluster.wait_for_online_members(predict_queue, NODES)
        time.sleep(3)
    final = assert_nothing_lost(system, load)
    queue_after = cluster.quorum_queue(predict_queue)
    report(
        output_dir,
        "broker_cluster_node_loss",
        {
            "nodes": NODES,
            "killed": "leader of the predict quorum queue",
            "node_down_s": NODE_DOWN_S,
            "first_success_after_kill_s": None if recovered is None else round(recovered, 2),
            "sync_successes_while_down": successes_while_down,
            "accepted_while_down": accepted_while_down,
            "connections_by_node_before_kill": connections_before_kill,
            "connections_on_killed_node": connections_before_kill[victim.node_name],
            "new_leader": queue_while_down["leader"],
            "rejoin_s": round(rejoin_s, 2),
            "queue_member_online_again_s": round(queue_rejoin_s, 2),
            "requests_by_status": dict(load.record.statuses),
            "accepted": len(load.record.accepted),
            "done": len(final["done"]),
        },
    )
    # The kill must hit clients too, not only the queue: they reconnect to the other nodes.
    assert connections_before_kill[victim.node_name] > 0, connections_before_kill
    assert victim.node_name not in running_while_down and len(running_while_down) == NODES - 1
    assert queue_while_down["leader"] != victim.node_name
    assert recovered is not None and recovered <= GOES_ON_BOUND_S, f"no success within {GOES_ON_BOUND_S}s"
    assert successes_while_down > 0 and accepted_while_down > 0
    assert sorted(queue_after["online"]) == sorted(node.node_name for node in cluster.nodes)
