"""The one consume loop and its hooks (micro-batches, thread-safe callbacks) against the real RabbitMQ."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from shared.backoff import Backoff
from shared.messaging.batches import BatchCollector
from shared.messaging.channel import Channel
from shared.messaging.consumer import BrokerAddress, ConsumerLoop, dispatch
from shared.messaging.delivery import Delivery
from shared.messaging.rabbitmq import open_channel
from shared.messaging.rpc import DIRECT_REPLY_TO
from shared.messaging.schemas import PredictionJob
from shared.messaging.topology import Topology
from tests.support.network import free_port


def job(number: int) -> PredictionJob:
    return PredictionJob(job_id=f"job-{number}", image_key=f"uploads/x/{number}.jpg", submitted_at=1.0)


def wait_until(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def topology(namespace: str) -> Topology:
    return Topology(namespace, predict_max_length=50, delivery_limit=2)


@pytest.fixture
def publish_jobs(amqp_url: str, topology: Topology) -> Callable[[int], None]:
    def publish(count: int) -> None:
        with open_channel(amqp_url, topology=topology, confirms=True) as channel:
            for number in range(count):
                channel.publish("", topology.predict_queue, job(number))

    return publish


@pytest.fixture
def run_loop() -> Iterator[Callable[[ConsumerLoop, Callable[[Channel], None]], None]]:
    running: list[tuple[ConsumerLoop, threading.Thread]] = []

    def start(loop: ConsumerLoop, session: Callable[[Channel], None]) -> None:
        thread = threading.Thread(target=loop.run, args=(session,), daemon=True)
        thread.start()
        running.append((loop, thread))

    yield start
    for loop, thread in running:
        loop.stopping.set()
        thread.join(timeout=15)
        assert not thread.is_alive(), f"{loop.name} did not stop"


def test_handlers_get_every_delivery_and_a_lost_connection_is_reconnected(
    amqp_url: str, topology: Topology, publish_jobs: Callable[[int], None], run_loop: Callable
) -> None:
    stopping, heard, sessions = threading.Event(), [], []
    loop = ConsumerLoop(
        "test", BrokerAddress(amqp_url), topology, stopping=stopping, prefetch=4, backoff=Backoff(0.05, 0.1)
    )
    consume = dispatch({topology.predict_queue: heard.append}, stopping)

    def session(channel: Channel) -> None:
        sessions.append(channel)
        if len(sessions) == 1:
            raise ConnectionResetError("the connection went away")  # the loop must connect again
        consume(channel)

    run_loop(loop, session)
    publish_jobs(3)
    wait_until(lambda: len(heard) == 3)
    assert len(sessions) == 2 and loop.connected.is_set()
    assert [PredictionJob.decode(delivery.body).job_id for delivery in heard] == ["job-0", "job-1", "job-2"]


def test_without_a_broker_it_keeps_trying_and_says_so(topology: Topology, run_loop: Callable) -> None:
    unavailable = threading.Event()
    loop = ConsumerLoop(
        "test",
        BrokerAddress(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"),
        topology,
        stopping=threading.Event(),
        backoff=Backoff(0.05, 0.1),
        connect_timeout_s=0.2,
        on_unavailable=unavailable.set,
    )
    run_loop(loop, lambda _channel: None)
    assert unavailable.wait(10)
    assert not loop.connected.is_set()


def test_batches_fill_up_to_their_size_and_what_is_left_goes_back_at_the_stop(
    amqp_url: str, topology: Topology, publish_jobs: Callable[[int], None]
) -> None:
    publish_jobs(5)
    with open_channel(amqp_url, topology=topology, prefetch=5) as channel:
        batches = BatchCollector(channel, topology.predict_queue, max_size=3, max_wait_s=0.5)
        wait_until(lambda: channel.serve(0.1) or len(batches) == 5)
        first = batches.next_batch()
        assert len(first) == 3 and len(batches) == 2
        for delivery in first:
            channel.ack(delivery.tag)
        assert batches.return_all() == 2 and batches.next_batch() == []
        channel.serve(0.2)  # the requeued ones may come straight back to this consumer
    with open_channel(amqp_url, topology=topology) as channel:
        wait_until(lambda: channel.queue_depth(topology.predict_queue) == 2)


def test_a_lone_delivery_waits_at_most_the_batch_wait(
    amqp_url: str, topology: Topology, publish_jobs: Callable[[int], None]
) -> None:
    publish_jobs(1)
    with open_channel(amqp_url, topology=topology, prefetch=5) as channel:
        batches = BatchCollector(channel, topology.predict_queue, max_size=8, max_wait_s=0.3)
        wait_until(lambda: channel.serve(0.1) or len(batches) == 1)
        started = time.monotonic()
        assert len(batches.next_batch()) == 1
        assert 0.25 <= time.monotonic() - started < 2


def test_work_handed_over_from_another_thread_runs_on_the_channel_thread(amqp_url: str, topology: Topology) -> None:
    ran_on: list[str] = []
    with open_channel(amqp_url, topology=topology) as channel:
        helper = threading.Thread(
            target=lambda: channel.call_soon_threadsafe(lambda: ran_on.append(threading.current_thread().name))
        )
        helper.start()
        helper.join()
        wait_until(lambda: channel.serve(0.1) or ran_on)
    assert ran_on == [threading.current_thread().name]


def test_a_reply_goes_to_the_asker_with_its_correlation_id(amqp_url: str, topology: Topology) -> None:
    answers: list[Delivery] = []
    with open_channel(amqp_url, topology=topology, confirms=True) as asker:
        asker.consume(DIRECT_REPLY_TO, answers.append, auto_ack=True)
        asker.publish("", topology.predict_queue, job(1), correlation_id="c-1", reply_to=DIRECT_REPLY_TO)
        with open_channel(amqp_url, topology=topology) as answerer:
            requests: list[Delivery] = []
            wait_until(lambda: requests.append(answerer.get(topology.predict_queue)) or requests[-1] is not None)
            assert answerer.reply(requests[-1], job(2))
            answerer.ack(requests[-1].tag)
        wait_until(lambda: asker.serve(0.1) or answers)
    assert answers[0].correlation_id == "c-1" and PredictionJob.decode(answers[0].body).job_id == "job-2"
