"""Runs the decode_upload fuzz target (fuzz_decode_upload.py) for a bounded time.

libFuzzer exits 0 when the time is spent without a finding; a crash (an exception other than
BadInput), a hang (one input over PER_INPUT_TIMEOUT_S) or running out of memory exits non-zero
and leaves the input under test-output/fuzz/ to reproduce it:
`python tests/fuzz/fuzz_decode_upload.py <that file>`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.fuzz.seeds import seed_corpus

TARGET = Path(__file__).with_name("fuzz_decode_upload.py")
FUZZ_TIME_S = 45
# Each seed decodes in milliseconds; several seconds for one input means it hangs.
PER_INPUT_TIMEOUT_S = 10
RSS_LIMIT_MB = 1024
# libFuzzer stops itself after FUZZ_TIME_S; this only catches a fuzzer that does not.
SUBPROCESS_TIMEOUT_S = FUZZ_TIME_S + 120


def test_decode_upload_survives_coverage_guided_fuzzing(tmp_path: Path, output_dir: Path) -> None:
    corpus = seed_corpus(tmp_path / "corpus")
    seeds = len(list(corpus.iterdir()))
    artifacts = output_dir / "fuzz"
    artifacts.mkdir(exist_ok=True)
    command = [
        sys.executable,
        str(TARGET),
        f"-max_total_time={FUZZ_TIME_S}",
        f"-timeout={PER_INPUT_TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False)
    log = result.stdout + result.stderr
    (artifacts / "decode_upload.log").write_text(log)
    assert result.returncode == 0, log[-8000:]
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    assert runs is not None, log[-3000:]
    # Far fewer runs than inputs seeded would mean the target did not really run.
    assert int(runs[1]) > seeds * 10, log[-3000:]
