"""Flask's request, tuned for multipart bodies of several megabytes (camera images).

Two costs of a 3 MB upload that served no purpose (docs/performance.md, issue 12):

- Werkzeug's form parser reads the body 64 KiB at a time, and gunicorn answers each read by
  copying everything it has read ahead (up to 1 MiB) twice: about 50 MB of copying, holding
  the GIL, per 3 MB body. A 1 MiB buffer in between turns that into a few copies per byte.
- Werkzeug spools every file part over 500 KB to a temporary file, which the upload check
  then reads straight back into memory. The parts now stay in memory: what they hold is
  bounded by the request size limit, and `uploaded_files` holds every file's bytes anyway.
"""

from __future__ import annotations

import io
from typing import IO, Any

from flask import Request
from werkzeug.formparser import FormDataParser

BODY_READ_BUFFER_BYTES = 1024 * 1024


class BufferedFormDataParser(FormDataParser):
    """Werkzeug's form parser, reading the body through one large buffer."""

    def parse(self, stream: IO[bytes], *args: Any, **kwargs: Any) -> Any:
        # Werkzeug hands over its LimitedStream (a raw stream) or, for a body it already holds
        # or an empty one, a BytesIO: both have the `readinto` a BufferedReader reads through.
        buffered = io.BufferedReader(stream, BODY_READ_BUFFER_BYTES)  # type: ignore[arg-type]
        return super().parse(buffered, *args, **kwargs)


class UploadRequest(Request):
    """The gateway's request class: large bodies read in big pieces, file parts kept in memory."""

    form_data_parser_class = BufferedFormDataParser

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()
