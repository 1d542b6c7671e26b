"""Micro-batching: deliveries collected into batches of at most `max_size`, waiting at most
`max_wait_s` for a batch to fill, and handed back to the queue when the consumer stops.

The worker runs its model on a batch at a time: jobs that arrived while the last batch ran are
taken at once, and a lone job waits no more than `max_wait_s` for company.
"""

from __future__ import annotations

import time

from shared.messaging.channel import Channel
from shared.messaging.delivery import Delivery


class BatchCollector:
    """Holds the deliveries of one queue on one channel until they are taken as batches."""

    def __init__(self, channel: Channel, queue: str, *, max_size: int, max_wait_s: float) -> None:
        self._channel = channel
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._buffer: list[Delivery] = []
        channel.consume(queue, self._buffer.append)

    def __len__(self) -> int:
        return len(self._buffer)

    def next_batch(self) -> list[Delivery]:
        """The next batch, after serving the connection until it is full or `max_wait_s` passed;
        empty when nothing is waiting (call `Channel.serve` to wait for deliveries)."""
        if not self._buffer:
            return []
        deadline = time.monotonic() + self._max_wait_s
        while len(self._buffer) < self._max_size and time.monotonic() < deadline:
            self._channel.serve(max(deadline - time.monotonic(), 0))
        batch = self._buffer[: self._max_size]
        del self._buffer[: len(batch)]
        return batch

    def return_all(self) -> int:
        """Requeue every delivery not yet taken (prefetched, for other consumers); return how many."""
        returned = len(self._buffer)
        for delivery in self._buffer:
            self._channel.requeue(delivery.tag)
        self._buffer.clear()
        return returned
