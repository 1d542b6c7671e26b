"""Bearer-token check for write operations (dataset uploads, training, promotion)."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import TypeVar

from flask import current_app, request

from shared.errors import Unauthorized

ViewT = TypeVar("ViewT", bound=Callable[..., object])


def require_write_token(view: ViewT) -> ViewT:
    """Reject the request with 401 unless it carries the configured token (if one is set)."""

    @functools.wraps(view)
    def checked(*args: object, **kwargs: object) -> object:
        expected = current_app.config["SETTINGS"].write_token
        if expected:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            # compare_digest: the time taken does not reveal how much of a guess was right.
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
                raise Unauthorized("this operation needs 'Authorization: Bearer <write token>'")
        return view(*args, **kwargs)

    return checked  # type: ignore[return-value]
