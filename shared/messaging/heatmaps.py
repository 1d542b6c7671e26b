"""Heat-map requests and their replies: the gateway asks, a worker renders and stores the PNG.

The PNG itself does not travel on the broker: the worker stores it where the gateway serves it
from (`layout.prediction_heatmap`), and the reply only says that it is there, or why not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shared.messaging.schemas import Message


@dataclass(frozen=True)
class HeatmapRequest(Message):
    """Render the heat map of the finished prediction `job_id`, whose upload is at `image_key`."""

    kind: ClassVar[str] = "heatmap.request"
    job_id: str
    image_key: str
    requested_at: float

    @property
    def message_id(self) -> str:
        return self.job_id


@dataclass(frozen=True)
class HeatmapReply(Message):
    """The heat map is stored (`error` None), or the error's code and message say why not."""

    kind: ClassVar[str] = "heatmap.reply"
    job_id: str
    error: dict[str, str] | None = None

    @property
    def message_id(self) -> str:
        return self.job_id
