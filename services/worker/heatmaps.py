"""Heat maps on request: the worker consumes `heatmap`, renders in its io pool, replies.

A request names a finished prediction; the worker reads its stored result (the class
activation the model gave, shared/heatmap.py) and its upload, draws the overlay, stores the PNG
at `layout.prediction_heatmap`, and replies over direct reply-to that it is there (or why not).

The consume loop's thread only takes the request and later sends the reply and the ack: the
store reads, the decode and the drawing (about 12 ms for a typical upload, 60 ms for a camera
JPEG) run in the worker's io pool, so a batch of predictions never waits behind them. A channel
belongs to the loop's thread, so the pool hands the reply back with `call_soon_threadsafe`,
which runs it on the loop's thread during its next `serve`.

Every outcome is a reply and an ack, errors included (a deleted prediction, a store outage):
a request is only worth its waiting client, who decides whether to ask again.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import Executor, Future

from shared import metrics, prediction_records
from shared.errors import Gone, MessageDecodeError, NotFound, SkinLesionError, TransientError
from shared.heatmap import class_activation_of, render_heatmap
from shared.messaging.channel import Channel
from shared.messaging.delivery import Delivery
from shared.messaging.heatmaps import HeatmapReply, HeatmapRequest
from shared.messaging.topology import Topology
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

RENDER_FAILED = "heatmap_failed"


class HeatmapRenderer:
    """Answers heat-map requests on the worker's channel; the drawing runs in `pool`."""

    def __init__(self, settings: Settings, store: ObjectStore, topology: Topology, pool: Executor) -> None:
        self._settings = settings
        self._store = store
        self._queue = topology.heatmap_queue
        self._pool = pool
        # Every outcome's series exists from the start: the dashboard shows 0, not "no data".
        for outcome in ("rendered", "refused", "unavailable", "failed"):
            metrics.HEATMAPS.labels(outcome)

    def subscribe(self, channel: Channel) -> None:
        channel.consume(self._queue, functools.partial(self._on_request, channel))

    def _on_request(self, channel: Channel, request: Delivery) -> None:
        try:
            rendering = self._pool.submit(self.answer, request.body)
        except RuntimeError:  # the pool is shut down: the worker is stopping; the broker redelivers
            return
        rendering.add_done_callback(functools.partial(self._hand_back, channel, request))

    def _hand_back(self, channel: Channel, request: Delivery, rendering: Future[HeatmapReply]) -> None:
        """In the pool: queue the reply for the loop's thread, the only one that may use the channel."""
        reply = functools.partial(self._reply, channel, request, rendering.result())
        try:
            channel.call_soon_threadsafe(reply)
        except Exception as error:  # the connection is gone: the broker redelivers the request
            log.info("heat map of a lost connection not answered: %r", error)

    @staticmethod
    def _reply(channel: Channel, request: Delivery, reply: HeatmapReply) -> None:
        if not channel.is_open:
            return  # the request went back to the broker with the channel
        channel.reply(request, reply)
        channel.ack(request.tag)

    def answer(self, body: bytes) -> HeatmapReply:
        """Render and store the heat map a request asks for; the reply, whatever happened."""
        try:
            request = HeatmapRequest.decode(body)
        except MessageDecodeError as error:
            log.warning("undecodable heat-map request: %s", error)
            return HeatmapReply(job_id="", error={"code": error.code, "message": str(error)})
        started = time.monotonic()
        try:
            self.render(request)
        except SkinLesionError as error:
            outcome = "unavailable" if isinstance(error, TransientError) else "refused"
            metrics.HEATMAPS.labels(outcome).inc()
            return HeatmapReply(job_id=request.job_id, error={"code": error.code, "message": str(error)})
        except Exception as error:  # a decoder crash must not go unanswered
            log.exception("rendering the heat map of %s failed", request.job_id)
            metrics.HEATMAPS.labels("failed").inc()
            return HeatmapReply(request.job_id, error={"code": RENDER_FAILED, "message": f"rendering failed: {error}"})
        metrics.HEATMAPS.labels("rendered").inc()
        metrics.HEATMAP_DURATION.observe(time.monotonic() - started)
        return HeatmapReply(job_id=request.job_id)

    def render(self, request: HeatmapRequest) -> None:
        """Store the heat map of `request.job_id` unless it is there already.

        Deletion is honoured as for results (shared/prediction_records.py): a heat map of a
        deleted prediction, or of one deleted while it was drawn, is not kept (Gone).
        """
        job_id = request.job_id
        if prediction_records.is_deleted(self._store, job_id):
            raise Gone(f"prediction {job_id} was deleted")
        if prediction_records.has_heatmap(self._store, job_id):
            return  # drawn for an earlier request
        result = prediction_records.read_result(self._store, job_id)
        if result is None:
            raise NotFound(f"prediction {job_id} has no result to draw from")
        png = render_heatmap(
            self._store.get(request.image_key),
            class_activation_of(result),
            max_bytes=self._settings.max_upload_bytes,
            max_pixels=self._settings.max_image_pixels,
        )
        prediction_records.store_heatmap(self._store, job_id, png)
