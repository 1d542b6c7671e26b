"""Message bodies: frozen dataclasses with encode/decode, versioned by `SCHEMA_VERSION`.

Bodies are JSON. AMQP properties (message_id = job id, content_type, timestamp, the schema
version header) are set by the broker module from `message_id` and `kind`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from shared.errors import MessageDecodeError

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"

MessageT = TypeVar("MessageT", bound="Message")


@dataclass(frozen=True)
class Message:
    """Base of every message body."""

    kind: ClassVar[str] = "message"

    @property
    def message_id(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls: type[MessageT], body: bytes) -> MessageT:
        """Parse a body; any malformation becomes MessageDecodeError (a permanent error)."""
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise TypeError(f"expected a JSON object, got {type(document).__name__}")
            names = {spec.name for spec in dataclasses.fields(cls)}
            return cls(**{key: value for key, value in document.items() if key in names})
        except (ValueError, TypeError) as error:
            raise MessageDecodeError(f"cannot decode {cls.kind} message: {error}") from error


@dataclass(frozen=True)
class PredictionJob(Message):
    """One image to classify; the image itself is in the store at `image_key`."""

    kind: ClassVar[str] = "prediction.job"
    job_id: str
    image_key: str
    submitted_at: float
    # The collection (clinic) the client says the image comes from: its threshold is used.
    collection: str | None = None

    @property
    def message_id(self) -> str:
        return self.job_id


@dataclass(frozen=True)
class PredictionResult(Message):
    """The answer to a PredictionJob: a prediction, or an error with a code and message."""

    kind: ClassVar[str] = "prediction.result"
    job_id: str
    label: str | None = None
    probability_malignant: float | None = None
    threshold: float | None = None
    # The collection whose own threshold decided the label; None: the global threshold.
    threshold_collection: str | None = None
    model_version: str | None = None
    submitted_at: float | None = None
    completed_at: float | None = None
    error: dict[str, str] | None = None
    # Sharpness and exposure of the image (shared/image_quality.py); None for older results.
    quality: dict[str, Any] | None = None
    # How like the training images it is (shared/serving/domain.py): the score and warnings, or
    # why they are not available; None for results older than the field.
    domain: dict[str, Any] | None = None
    # Each 7x7 location's share of the malignant logit, what the heat map is drawn from; kept
    # in the stored result, left out of the API's answer. None when the version has no such output.
    class_activation: list[list[float]] | None = None

    @property
    def message_id(self) -> str:
        return self.job_id

    def public(self) -> dict[str, Any]:
        """The API's view of this result (latency is added by whoever measured it)."""
        if self.error:
            return {"id": self.job_id, "status": "failed", "error": self.error}
        return {
            "id": self.job_id,
            "status": "done",
            "label": self.label,
            "probability_malignant": self.probability_malignant,
            "threshold": self.threshold,
            "threshold_collection": self.threshold_collection,
            "model_version": self.model_version,
            "quality": self.quality,
            "domain": self.domain,
        }


@dataclass(frozen=True)
class TrainRequest(Message):
    """A request to retrain; `epochs` is bounded by the trainer's own maximum."""

    kind: ClassVar[str] = "training.request"
    job_id: str
    requested_at: float
    epochs: int | None = None

    @property
    def message_id(self) -> str:
        return self.job_id


@dataclass(frozen=True)
class DatasetImportRequest(Message):
    """A staged batch of labelled images for the trainer to import (shared/dataset_staging.py)."""

    kind: ClassVar[str] = "dataset.import"
    batch_id: str
    staged_at: float

    @property
    def message_id(self) -> str:
        return self.batch_id


@dataclass(frozen=True)
class Event(Message):
    """A fact published on the `events` topic exchange; `name` is the routing key."""

    kind: ClassVar[str] = "event"
    name: str
    event_id: str
    occurred_at: float
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def message_id(self) -> str:
        return self.event_id
