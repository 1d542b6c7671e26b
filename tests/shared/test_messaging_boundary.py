"""pika stays inside shared/messaging/: every other module, tests and tools included, goes
through the project's own messaging layer (Channel, Delivery, the consumer loop, admin)."""

from __future__ import annotations

import re
from pathlib import Path

from shared.settings import REPO_ROOT

ALLOWED = Path("shared/messaging")
SKIPPED_DIRS = {".venv", "venv", "node_modules", "__pycache__", ".git"}
# An import statement at the start of a line: code, or a program kept in a string and run elsewhere.
PIKA_IMPORT = re.compile(r"^\s*(import\s+pika\b|from\s+pika(\.|\s)|import\s+.*,\s*pika\b)", re.MULTILINE)


def python_files() -> list[Path]:
    files = []
    for path in REPO_ROOT.rglob("*.py"):
        relative = path.relative_to(REPO_ROOT)
        if not SKIPPED_DIRS.intersection(relative.parts) and not relative.parts[0].startswith("."):
            files.append(relative)
    return files


def test_the_repository_has_python_files_to_scan() -> None:
    scanned = python_files()
    assert Path("services/worker/consumer.py") in scanned and Path("shared/messaging/rabbitmq.py") in scanned


def test_no_module_outside_shared_messaging_imports_pika() -> None:
    offenders = [
        str(path)
        for path in python_files()
        if not path.is_relative_to(ALLOWED) and PIKA_IMPORT.search((REPO_ROOT / path).read_text(errors="replace"))
    ]
    assert offenders == [], f"pika imported outside {ALLOWED}/: {offenders}"


def test_the_pattern_sees_every_form_of_import() -> None:
    for line in ("import pika", "import pika.exceptions", "from pika.spec import Basic", "import json, pika"):
        assert PIKA_IMPORT.search(line), line
    for line in ("# the only module that imports pika", 'logging.getLogger("pika")'):
        assert not PIKA_IMPORT.search(line), line
