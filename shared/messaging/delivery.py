"""A delivered message as services see it: the project's own type, not pika's.

Services read the body and the few properties they act on (who waits for a reply, why the
broker dead-lettered it, whether it was delivered before); the delivery tag settles it on the
channel it came from (shared/messaging/channel.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One message taken from a queue, unsettled until its channel acks, requeues or rejects it."""

    body: bytes
    tag: int
    redelivered: bool = False
    # Whether the publisher asked the broker to keep it on disk (delivery mode 2).
    persistent: bool = False
    headers: Mapping[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None
    message_id: str | None = None
    content_type: str | None = None
    # Seconds since the epoch, as the publisher stamped it (None: not stamped).
    timestamp: int | None = None
    type: str | None = None

    def header(self, name: str) -> str | None:
        """A header as text (the broker's own, such as `x-first-death-reason`, arrive as bytes)."""
        value = self.headers.get(name)
        if isinstance(value, bytes):
            return value.decode(errors="replace")
        return None if value is None else str(value)
