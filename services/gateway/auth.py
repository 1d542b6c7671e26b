"""Who may write (dataset uploads, training, promotion): a bearer token when one is set, else
only the gateway's own pages and clients that are not browsers.

Without a token, any web page a user has open could otherwise make the browser post a form
to the gateway (promote a version, start training). Browsers say where a request comes from
(`Sec-Fetch-Site`, and `Origin` on every cross-site POST); curl and scripts send neither, so
they keep working. A form cannot add an `Authorization` header, so with a token set the token
alone decides.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import TypeVar

from flask import current_app, request

from shared.errors import CrossSiteWrite, Unauthorized

ViewT = TypeVar("ViewT", bound=Callable[..., object])
# Sec-Fetch-Site values of a request the user made on this gateway's own pages (or typed).
_OWN_FETCHES = {"same-origin", "none"}


def require_write_token(view: ViewT) -> ViewT:
    """401 without the configured token; with none configured, 403 for another site's request."""

    @functools.wraps(view)
    def checked(*args: object, **kwargs: object) -> object:
        expected = current_app.config["SETTINGS"].write_token
        if expected:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            # compare_digest: the time taken does not reveal how much of a guess was right.
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
                raise Unauthorized("this operation needs 'Authorization: Bearer <write token>'")
        elif not _from_own_origin():
            raise CrossSiteWrite(
                "no write token is set, so writes are accepted only from this gateway's own pages"
                " (or from clients that are not browsers); a request from another site was refused"
            )
        return view(*args, **kwargs)

    return checked  # type: ignore[return-value]


def _from_own_origin() -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in _OWN_FETCHES
    origin = request.headers.get("Origin")
    if origin is not None:  # "null" (a sandboxed frame, a file) is never this gateway
        return origin == request.host_url.rstrip("/")
    return True
