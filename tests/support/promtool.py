"""promtool, Prometheus's own rule engine, for the alert rules' tests.

It comes from Debian's `prometheus` package (`make test` installs it when missing); without it
a test fails rather than skips, like every test of something CI must provide.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

ALERT_RULES = REPO_ROOT / "deploy/prometheus/alerts.yml"


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """promtool's answer (exit status and output) to `args`."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("no promtool: install Debian's prometheus package (apt-get install -y prometheus)")
    return subprocess.run([found, *map(str, args)], capture_output=True, text=True, timeout=300, check=False)
