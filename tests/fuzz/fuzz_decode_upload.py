"""Coverage-guided fuzz target (atheris/libFuzzer) for the upload decoder, `decode_upload`.

The property: for any bytes, `decode_upload` either returns a DecodedImage or raises a
`BadInput` (which the gateway turns into a 4xx). Any other exception is a crash (a 500 in the
gateway), and an input that takes longer than libFuzzer's `-timeout` is a hang.

Run alone (a seed corpus of small JPEG/PNG files is generated when no corpus folder is given):

    python tests/fuzz/fuzz_decode_upload.py -max_total_time=60

Any libFuzzer flag works (`-timeout=10`, `-artifact_prefix=out/`, corpus folders as arguments).
tests/fuzz/test_fuzz_decode_upload.py runs it for a bounded time in the test suite.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

# Runnable as a plain script: the repository root is not on sys.path then.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Instrument the Python code the decoder runs (Pillow's plugins, EXIF parsing, our checks) so
# libFuzzer is guided by its branches; Pillow's C decoders are not instrumented.
with atheris.instrument_imports(include=["PIL", "shared"]):
    from PIL import ImageOps, JpegImagePlugin, PngImagePlugin, TiffImagePlugin  # noqa: F401

    from shared.errors import BadInput
    from shared.images import decode_upload

# Small limits keep each input fast; the checks they guard are what is being fuzzed.
MAX_BYTES = 256 * 1024
MAX_PIXELS = 4_000_000


def check_one_input(data: bytes) -> None:
    # A clear refusal is the right answer to bad bytes; anything else propagates as a crash.
    with contextlib.suppress(BadInput):
        decode_upload(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


def main(argv: list[str]) -> None:
    # Pillow warns about every kind of corrupt EXIF it skips; at thousands of inputs a second that
    # buries libFuzzer's own output. Warnings are not the property under test.
    warnings.simplefilter("ignore")
    if not any(not argument.startswith("-") for argument in argv[1:]):
        from tests.fuzz.seeds import seed_corpus  # after the sys.path fix above

        argv = [*argv, str(seed_corpus(Path(tempfile.mkdtemp(prefix="fuzz-decode-upload-"))))]
    atheris.Setup(argv, check_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
