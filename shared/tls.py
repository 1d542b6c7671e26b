"""The one way services trust a server over TLS: the system's CAs, or a CA file the operator names."""

from __future__ import annotations

import ssl
from pathlib import Path

from shared.errors import ConfigurationError


def verifying_context(ca_file: Path | None, setting: str) -> ssl.SSLContext:
    """A context that verifies certificates and host names against `ca_file` (PEM), or the system's CAs.

    A missing or unreadable file is a ConfigurationError naming `setting` (AMQP_CA_FILE, S3_CA_FILE).
    """
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(f"setting {setting}={ca_file}: cannot read CA certificates: {error}") from error
