"""The one error tree of the project.

The class says what to do with an error: `BadInput` maps to a 4xx and changes nothing,
`TransientError` is safe to retry (the worker requeues, the gateway answers 503),
`PermanentError` will fail again (the worker dead-letters or answers with an error).
The gateway maps classes to HTTP statuses in one place (services/gateway/errors.py).
"""

from __future__ import annotations


class SkinLesionError(Exception):
    """Root of every error this project raises on purpose."""

    code = "internal_error"


class ConfigurationError(SkinLesionError):
    """Raised when a setting is missing or malformed."""

    code = "configuration_error"


class BadInput(SkinLesionError):
    """Raised when a client sent something we will not process; nothing was changed."""

    code = "bad_input"
    http_status = 400


class InvalidImage(BadInput):
    """Raised when uploaded bytes are not a readable JPEG or PNG image."""

    code = "invalid_image"
    http_status = 422


class UnsupportedImageFormat(BadInput):
    """Raised when an upload is a real image in a format we do not accept (GIF, BMP...)."""

    code = "unsupported_image_format"
    http_status = 415


class PayloadTooLarge(BadInput):
    """Raised when an upload has more bytes than the configured limit."""

    code = "payload_too_large"
    http_status = 413


class ImageTooLarge(BadInput):
    """Raised when an image has more pixels than the limit (decompression-bomb guard)."""

    code = "image_too_large"
    http_status = 413


class Unauthorized(BadInput):
    """Raised when a write operation lacks the configured bearer token."""

    code = "unauthorized"
    http_status = 401


class CrossSiteWrite(BadInput):
    """Raised when a write comes from another site's page and no write token is set."""

    code = "cross_site_write"
    http_status = 403


class QuotaExceeded(BadInput):
    """Raised when a client already has as many jobs queued as one client may (429, retry later)."""

    code = "quota_exceeded"
    http_status = 429


class NotFound(SkinLesionError):
    """Raised when a job, object or model version does not exist."""

    code = "not_found"
    http_status = 404


class Gone(NotFound):
    """Raised when a prediction was deleted (on request, at delivery) or is past its retention."""

    code = "gone"
    http_status = 410


class HeatmapUnavailable(BadInput):
    """Raised when a prediction has no heat map to draw: it failed, or its model version has no
    class activation output."""

    code = "heatmap_unavailable"
    http_status = 409


class ObjectNotFound(NotFound):
    """Raised when a key is absent from the object store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object at {key!r}")
        self.key = key


class TransientError(SkinLesionError):
    """Raised when an operation failed for a reason that may pass; safe to retry."""

    code = "unavailable"
    http_status = 503


class BrokerUnavailable(TransientError):
    """Raised when RabbitMQ cannot be reached or dropped the connection."""

    code = "broker_unavailable"


class StorageUnavailable(TransientError):
    """Raised when the object store cannot be reached."""

    code = "storage_unavailable"


class StorageAccessDenied(StorageUnavailable):
    """Raised when the store refuses this service's credentials an operation (least privilege:
    each service may touch only its own part of the store, docs/security.md). Retried like any
    store error, since an operator may be fixing the grants; a 503 to a client."""

    code = "storage_access_denied"


class Overloaded(TransientError):
    """Raised when the prediction queue is full and the broker rejected the job."""

    code = "overloaded"


class PublishRefused(TransientError):
    """Raised when the broker refused a message it was asked to route: a full bounded queue, or
    no queue bound for its routing key."""

    code = "publish_refused"


class PermanentError(SkinLesionError):
    """Raised when processing a message can never succeed; it goes to the dead-letter queue."""

    code = "permanent_error"


class MessageDecodeError(PermanentError):
    """Raised when a message body is not valid JSON of the expected schema."""

    code = "bad_message"


class ModelUnavailable(TransientError):
    """Raised when no servable model version could be loaded."""

    code = "model_unavailable"
