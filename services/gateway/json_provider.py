"""JSON that browsers can parse: NaN and infinities (e.g. a ROC curve's first threshold,
+Infinity in model cards) become null in every response, not only where we remember."""

from __future__ import annotations

import math
from typing import Any

from flask.json.provider import DefaultJSONProvider


def finite_json(value: Any) -> Any:
    """`value` with every NaN and ±Infinity replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


class FiniteJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return super().dumps(finite_json(obj), **kwargs)
