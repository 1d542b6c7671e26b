"""Importing modules as the serving image would: with the trainer's packages unimportable."""

from __future__ import annotations

import subprocess
import sys

from shared.settings import REPO_ROOT

# What only the trainer image installs (requirements/training.lock beyond serving.lock).
TRAINING_ONLY = ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib")

_IMPORT_GUARD = """
import importlib, importlib.abc, sys
TRAINING_ONLY = set(sys.argv[1].split(","))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in TRAINING_ONLY:
            raise ImportError(f"{name} is not in the serving image")
sys.meta_path.insert(0, Refuse())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def import_without_training_packages(modules: list[str]) -> subprocess.CompletedProcess[str]:
    """Import `modules` in a fresh interpreter that refuses every TRAINING_ONLY package."""
    return subprocess.run(
        [sys.executable, "-c", _IMPORT_GUARD, ",".join(TRAINING_ONLY), *modules],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
