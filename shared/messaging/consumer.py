"""The one consume loop: connect, prepare, consume, and reconnect with backoff until stopped.

Every long-lived consumer of the project runs here. A service supplies its `session`: what to
do with one open Channel (consume queues with handlers, serve the connection, settle
deliveries). The loop owns everything around it: connecting (every node of AMQP_URL, TLS),
preparing the topology (declaring it, or checking what bootstrap declared), the prefetch and
confirm mode, `connected` for readiness probes, and after any failure a wait drawn from
shared/backoff.Backoff before connecting again. Nothing a session raises ends the loop; only
`stopping` does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.backoff import Backoff
from shared.errors import BrokerUnavailable
from shared.messaging.channel import Channel, OnDelivery
from shared.messaging.rabbitmq import CONNECTION_ERRORS, open_channel
from shared.messaging.topology import Topology

log = logging.getLogger(__name__)

Session = Callable[[Channel], None]


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is: AMQP_URL (one node or several, comma-separated) and its CA file."""

    amqp_url: str
    ca_file: Path | None = None


class ConsumerLoop:
    """Runs sessions on fresh connections until `stopping` is set.

    `prefetch`: unacked deliveries the broker sends ahead (None: unlimited, for auto-acked
    replies). `confirms`: publishes on the channel wait for the broker's confirm.
    `on_unavailable`: called when no broker node answered, before the wait (work that can go
    on without the broker). `backoff` paces reconnects; it starts again after each connect.
    """

    def __init__(
        self,
        name: str,
        broker: BrokerAddress,
        topology: Topology,
        *,
        stopping: threading.Event,
        prefetch: int | None = None,
        confirms: bool = False,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 5.0,
        on_unavailable: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.broker = broker
        self.topology = topology
        self.stopping = stopping
        self.prefetch = prefetch
        self.confirms = confirms
        self.backoff = backoff if backoff is not None else Backoff(first_s=1.0, cap_s=30.0)
        self.connect_timeout_s = connect_timeout_s
        self.on_unavailable = on_unavailable
        self.connected = threading.Event()
        # Monotonic time of the last connection attempt: a liveness probe sees the loop turn
        # while the broker is away.
        self.last_attempt = time.monotonic()

    def run(self, session: Session, *, setup: Session | None = None) -> None:
        """Run `session` on one connection after another until `stopping` is set.

        `setup` runs on each new channel before `connected` is set: the consumers and
        subscriptions a caller may rely on once the loop says it is connected.
        """
        while not self.stopping.is_set():
            if self.run_once(session, setup=setup):
                continue
            delay_s = self.backoff.next()
            log.warning("%s: reconnecting in %.1fs", self.name, delay_s)
            self.stopping.wait(delay_s)

    def run_once(self, session: Session, *, setup: Session | None = None) -> bool:
        """One connection's life; True when the session returned, False after a failure (logged)."""
        self.last_attempt = time.monotonic()
        try:
            with open_channel(
                self.broker.amqp_url,
                topology=self.topology,
                prefetch=self.prefetch,
                confirms=self.confirms,
                timeout_s=self.connect_timeout_s,
                ca_file=self.broker.ca_file,
            ) as channel:
                self.backoff.reset()
                if setup is not None:
                    setup(channel)
                self.connected.set()
                try:
                    session(channel)
                finally:
                    self.connected.clear()
            return True
        except BrokerUnavailable as error:
            log.warning("%s: %s", self.name, error)
            if self.on_unavailable is not None:
                self.on_unavailable()
        except CONNECTION_ERRORS as error:
            log.warning("%s: lost the broker connection (%r)", self.name, error)
        except Exception:  # a surprise is logged and outlived, never a reason to exit
            log.exception("%s: the consume loop failed", self.name)
        return False


def dispatch(
    handlers: dict[str, OnDelivery], stopping: threading.Event, *, tick: Callable[[], None] | None = None
) -> Session:
    """A session that consumes each queue of `handlers` with its handler until `stopping`;
    `tick` runs between turns of the loop (about twice a second, and after deliveries)."""

    def session(channel: Channel) -> None:
        for queue, handler in handlers.items():
            channel.consume(queue, handler)
        while not stopping.is_set():
            if tick is not None:
                tick()
            channel.serve(0.5)

    return session
