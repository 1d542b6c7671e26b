"""Stripping what a photograph says beyond its pixels, before anything is stored.

Camera and phone files carry EXIF (device, time, often the GPS position), XMP, IPTC, ICC
profiles (whose text names devices), comments, PNG text chunks, and sometimes whole extra
images after the end of the first (phones' "MPO" depth maps and previews). None of it is
needed: the model reads pixels only, and Pillow ignores ICC profiles when it decodes, so
predictions are the same with or without them.

Stripping is lossless where it can be: the file's segments (JPEG) or chunks (PNG) are
filtered by a whitelist of what decoding needs, the compressed pixel data is copied byte for
byte. Only an image whose EXIF orientation turns it must be re-encoded, from its upright
pixels, so that nothing is stored sideways once the tag is gone (JPEG at quality 95).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks a PNG decoder needs to show the right pixels; everything else (tEXt, zTXt, iTXt,
# eXIf, iCCP, tIME, private chunks, APNG frames) is dropped.
PNG_KEPT_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"bKGD", b"pHYs"}

_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
_APP0, _APP14 = 0xE0, 0xEE  # JFIF header; Adobe header (says how CMYK/YCCK are to be read)
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn have no length field
JPEG_REENCODE_QUALITY = 95


# Bounds on a file's structure, checked before any decoder sees it. Pillow walks JPEG header
# markers (and their 0xFF fill bytes) and PNG chunks in Python, one at a time: 9 MiB of fill
# bytes cost 7 seconds of a gateway's CPU. Real files are far inside these: a progressive JPEG
# has a few dozen segments, a 10 MiB PNG from libpng about 1,300 chunks of 8 KiB.
MAX_JPEG_SEGMENTS = 1024
MAX_JPEG_FILL_BYTES = 64 * 1024
MAX_PNG_CHUNKS = 16 * 1024


class MalformedStructure(ValueError):
    """Raised when a file's segments or chunks cannot be walked; the caller re-encodes instead."""


class ExcessiveStructure(ValueError):
    """Raised when a file has more segments, chunks or fill bytes than any real image needs."""


def _keep_jpeg_marker(marker: int) -> bool:
    if marker == _COM or 0xE0 <= marker <= 0xEF:  # comments and APP0..APP15 (EXIF, XMP, ICC, IPTC...)
        return marker in {_APP0, _APP14}
    return True  # frame, tables, restart interval: what decoding needs


# A marker after entropy-coded data: 0xFF followed by anything but 0x00 (a stuffed 0xFF byte),
# RST0-7 (restart markers inside the scan) or 0xFF (fill). One regex search, not a Python loop
# over every 0xFF of a 3 MB scan (about 1 in 200 bytes).
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _end_of_scan(data: bytes, start: int) -> int:
    """Index of the first marker after a scan's entropy-coded data (0xFF00 and RSTn are data)."""
    found = _MARKER_AFTER_SCAN.search(data, start)
    if found is None:
        raise MalformedStructure("a JPEG scan runs to the end of the file")
    return found.start()


_FILL_RUN = re.compile(rb"\xff+")


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment up to and including EOI, fill bytes skipped.

    Raises MalformedStructure if the file cannot be walked, ExcessiveStructure past the bounds.
    A run of fill bytes is skipped in one regex match, never byte by byte.
    """
    if data[:2] != b"\xff\xd8":
        raise MalformedStructure("no JPEG start marker")
    position, segments, fill_bytes = 2, 0, 0
    while position + 1 < len(data):
        if data[position] != 0xFF:
            raise MalformedStructure(f"expected a JPEG marker at byte {position}")
        run_end = _FILL_RUN.match(data, position).end()  # type: ignore[union-attr]
        fill_bytes += run_end - position - 1  # every 0xFF before the marker's own
        if fill_bytes > MAX_JPEG_FILL_BYTES:
            raise ExcessiveStructure(f"the JPEG has more than {MAX_JPEG_FILL_BYTES} fill bytes")
        position = run_end - 1
        if position + 1 >= len(data):
            break
        marker = data[position + 1]
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise ExcessiveStructure(f"the JPEG has more than {MAX_JPEG_SEGMENTS} segments")
        if marker == _EOI:
            yield marker, position, position + 2
            return
        if marker in _STANDALONE or marker == _SOI:
            yield marker, position, position + 2
            position += 2
            continue
        if position + 4 > len(data):
            raise MalformedStructure("a JPEG segment header runs past the end of the file")
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if end > len(data):
            raise MalformedStructure("a JPEG segment runs past the end of the file")
        if marker == _SOS:
            end = _end_of_scan(data, end)
        yield marker, position, end
        position = end
    raise MalformedStructure("the JPEG has no end marker")


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk up to and including IEND; ExcessiveStructure past the bound."""
    if not data.startswith(PNG_SIGNATURE):
        raise MalformedStructure("no PNG signature")
    position = len(PNG_SIGNATURE)
    chunks = 0
    while position + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise ExcessiveStructure(f"the PNG has more than {MAX_PNG_CHUNKS} chunks")
        length = int.from_bytes(data[position : position + 4], "big")
        chunk_type = data[position + 4 : position + 8]
        end = position + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise MalformedStructure(f"the PNG chunk {chunk_type!r} runs past the end of the file")
        yield chunk_type, position, end
        if chunk_type == b"IEND":
            return
        position = end
    raise MalformedStructure("the PNG has no IEND chunk")


def png_exif(data: bytes) -> bytes | None:
    """The data of a PNG's eXIf chunk (wherever it is), or None."""
    for chunk_type, start, end in _png_chunks(data):
        if chunk_type == b"eXIf":
            return data[start + 8 : end - 4]
    return None


def check_structure(data: bytes, image_format: str) -> None:
    """Raise ExcessiveStructure if walking the file's segments or chunks would cost too much.

    A file that cannot be walked at all passes: the decoder judges it, and `strip_*` falls
    back to re-encoding what it decoded.
    """
    walk = _jpeg_segments(data) if image_format == "jpeg" else _png_chunks(data)
    try:
        for _ in walk:
            pass
    except MalformedStructure:
        pass


def strip_jpeg(data: bytes) -> bytes:
    """The JPEG without comments and APPn segments other than JFIF and Adobe, cut at its EOI."""
    view = memoryview(data)  # the kept pieces are copied once, by the join, not sliced out first
    kept = [view[:2]]
    for marker, start, end in _jpeg_segments(data):
        if _keep_jpeg_marker(marker):
            kept.append(view[start:end])
    # anything after the end (extra MPO images, trailers) is dropped
    return b"".join(kept)


def strip_png(data: bytes) -> bytes:
    """The PNG with only the chunks in PNG_KEPT_CHUNKS, cut at its IEND."""
    view = memoryview(data)
    kept = [PNG_SIGNATURE]
    for chunk_type, start, end in _png_chunks(data):
        if chunk_type in PNG_KEPT_CHUNKS:
            kept.append(view[start:end])
    return b"".join(kept)


def reencode(upright: Image.Image, image_format: str) -> bytes:
    """Encode pixels afresh with no metadata at all (Pillow writes only what `info` holds)."""
    clean = upright.copy()
    transparency = upright.info.get("transparency")
    clean.info = {} if transparency is None else {"transparency": transparency}
    buffer = io.BytesIO()
    if image_format == "jpeg":
        if clean.mode not in {"L", "RGB", "CMYK"}:
            clean = clean.convert("RGB")
        clean.save(buffer, "JPEG", quality=JPEG_REENCODE_QUALITY)
    else:
        clean.save(buffer, "PNG")
    return buffer.getvalue()
