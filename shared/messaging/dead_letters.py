"""Dead-letter helpers: why the broker gave a message up, and taking a dead-letter queue's
messages back out for replay.

The broker marks a dead-lettered message with `x-` headers (`x-first-death-reason`,
`x-death`...). They describe its last life; a replayed message starts a new one without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from shared.messaging.channel import Channel
from shared.messaging.delivery import Delivery

# The outcome of handling one dead message that keeps it in its queue (requeued at the end).
KEPT = "kept"


def failure_reason_code(delivery: Delivery) -> str | None:
    """Why the broker dead-lettered `delivery`: "rejected", "delivery_limit", "expired"... or None."""
    return delivery.header("x-first-death-reason")


def replayable_headers(delivery: Delivery) -> dict[str, Any]:
    """The delivery's headers without the broker's `x-` ones."""
    return {key: value for key, value in delivery.headers.items() if not key.startswith("x-")}


def drain_present(channel: Channel, queue: str, handle: Callable[[Delivery], str]) -> Iterator[str]:
    """Take each message present in `queue` now (not ones that arrive meanwhile) and `handle` it;
    yield each outcome. A message whose outcome is KEPT goes back to the queue once all are
    taken (so it is not taken twice); every other one is acked as soon as it is handled."""
    kept: list[int] = []
    try:
        for _ in range(channel.queue_depth(queue)):
            delivery = channel.get(queue)
            if delivery is None:
                break
            outcome = handle(delivery)
            if outcome == KEPT:
                kept.append(delivery.tag)
            else:
                channel.ack(delivery.tag)
            yield outcome
    finally:
        if channel.is_open:
            for tag in kept:
                channel.requeue(tag)
