"""Flask's request, tuned for multipart bodies of several megabytes (camera images).

- Werkzeug's form parser reads the body 64 KiB at a time, and gunicorn answers each read by
  copying everything it has read ahead (up to 1 MiB) twice: about 50 MB of copying, holding
  the GIL, per 3 MB body. A 1 MiB buffer in between turns that into a few copies per byte
  (docs/history/performance-runs.md, issue 12).
- Each file part is held in memory up to `SPOOL_ABOVE_BYTES` and on disk beyond, and is
  refused (413) as soon as it passes the upload limit: a 300 MiB part costs the gateway a
  megabyte of memory and 10 MiB of disk, not 300 MiB of memory (issue 22).
"""

from __future__ import annotations

import io
import tempfile
from typing import IO, Any

from flask import Request, current_app
from werkzeug.formparser import FormDataParser

from shared.errors import PayloadTooLarge

BODY_READ_BUFFER_BYTES = 1024 * 1024
# A phone photo stays in memory; anything larger goes to a temporary file while it is checked.
SPOOL_ABOVE_BYTES = 1024 * 1024


class BufferedFormDataParser(FormDataParser):
    """Werkzeug's form parser, reading the body through one large buffer."""

    def parse(self, stream: IO[bytes], *args: Any, **kwargs: Any) -> Any:
        # Werkzeug hands over its LimitedStream (a raw stream) or, for a body it already holds
        # or an empty one, a BytesIO: both have the `readinto` a BufferedReader reads through.
        buffered = io.BufferedReader(stream, BODY_READ_BUFFER_BYTES)  # type: ignore[arg-type]
        return super().parse(buffered, *args, **kwargs)


class FilePart(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """Where the form parser writes one file part: memory, then disk, never past `limit_bytes`."""

    def __init__(self, limit_bytes: int, filename: str | None) -> None:
        super().__init__(max_size=SPOOL_ABOVE_BYTES)
        self.limit_bytes = limit_bytes
        self.filename = filename
        self.size = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.size += len(data)
        if self.size > self.limit_bytes:
            # Raised inside the form parser: the rest of the part is never read.
            name = (self.filename or "")[:100]
            raise PayloadTooLarge(f"the file {name!r} has more than {self.limit_bytes} bytes; that is the limit")
        return super().write(data)


class UploadRequest(Request):
    """The gateway's request class: large bodies read in big pieces, file parts bounded and spooled."""

    form_data_parser_class = BufferedFormDataParser

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return FilePart(current_app.config["SETTINGS"].max_upload_bytes, filename)  # type: ignore[return-value]
