"""shared/serving/ is what the serving image runs: it needs none of the trainer's packages."""

from __future__ import annotations

import ast

from shared.settings import REPO_ROOT
from tests.support.serving_image import import_without_training_packages

SERVING = REPO_ROOT / "shared" / "serving"


def test_every_serving_module_imports_with_tensorflow_keras_and_matplotlib_blocked():
    modules = [f"shared.serving.{path.stem}" for path in sorted(SERVING.glob("*.py")) if path.stem != "__init__"]
    assert {"shared.serving.registry", "shared.serving.runtime", "shared.serving.domain"} <= set(modules)
    result = import_without_training_packages(modules)
    assert result.returncode == 0, result.stderr[-2000:]


def test_serving_never_imports_the_training_side():
    for path in SERVING.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert not [name for name in imported if name.startswith("shared.model")], path.name
