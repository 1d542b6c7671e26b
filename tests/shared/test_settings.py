"""Settings from the environment: the serving runtime is one of the known values."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import SERVING_RUNTIMES, Settings


def test_the_serving_runtime_defaults_to_litert():
    assert Settings.from_env({}).serving_runtime == "litert"


@pytest.mark.parametrize("runtime", SERVING_RUNTIMES)
def test_each_known_serving_runtime_is_accepted(runtime):
    assert Settings.from_env({"SERVING_RUNTIME": runtime}).serving_runtime == runtime


@pytest.mark.parametrize("runtime", ["tflite", "ONNXRUNTIME", ""])
def test_an_unknown_serving_runtime_is_a_configuration_error_naming_the_choices(runtime):
    with pytest.raises(ConfigurationError, match=r"SERVING_RUNTIME=.* is not one of onnxruntime, litert"):
        Settings.from_env({"SERVING_RUNTIME": runtime})


def test_overrides_are_checked_too():
    with pytest.raises(ConfigurationError, match="SERVING_RUNTIME"):
        Settings.from_env({}, serving_runtime="tensorrt")
