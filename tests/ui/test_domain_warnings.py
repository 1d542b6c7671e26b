"""The Predict tab's domain warnings, with the shipped model in a real worker: an image that is
not a dermatoscope image gets the strong warning in place of the result, one unlike the
training images a caution under it; a model version without domain statistics says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from shared.settings import Settings
from tests.support.images import drawn_lesion_jpeg, solid_jpeg
from tests.support.onnx_models import copy_shipped_production
from tests.support.system import RunningSystem, running_system, system_env
from tests.ui.browsing import open_ui, screenshot, upload


@pytest.fixture
def shipped_system(
    s3_settings: Settings, tmp_path: Path, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[RunningSystem]:
    env = system_env(s3_settings, copy_shipped_production(tmp_path / "models"))
    with running_system(env, output_dir / "logs" / "ui" / request.node.name, worker=True, gateway=True) as running:
        yield running


def test_a_non_dermoscopy_image_gets_a_warning_instead_of_a_result_and_an_unusual_one_a_caution(
    page: Page, shipped_system: RunningSystem, screenshots: Path
) -> None:
    open_ui(page, shipped_system)
    page.set_input_files(
        "#predict-files",
        [upload("grey square.jpg", solid_jpeg(128, (224, 224))), upload("drawn lesion.jpg", drawn_lesion_jpeg())],
    )
    grey = page.locator(".result", has_text="grey square.jpg")
    drawn = page.locator(".result", has_text="drawn lesion.jpg")
    expect(grey.locator(".result__domain--strong")).to_contain_text("Not a dermatoscope image")
    expect(grey).to_have_attribute("data-label", "not-dermoscopy")
    expect(grey.locator(".result__label")).to_have_count(0)
    expect(grey.locator(".probability__bar")).to_have_count(0)
    expect(drawn.locator(".result__label")).to_be_visible()
    expect(drawn.locator(".result__domain")).to_contain_text("Read with caution")
    expect(drawn.locator(".result__domain--strong")).to_have_count(0)
    screenshot(page, screenshots, "predict-domain-warnings")


def test_a_model_without_domain_statistics_says_the_check_is_not_available(page: Page, system: RunningSystem) -> None:
    system.start_worker()
    system.start_gateway()
    open_ui(page, system)
    page.set_input_files("#predict-files", [upload("bright.jpg", solid_jpeg(230))])
    card = page.locator(".result", has_text="bright.jpg")
    expect(card.locator(".result__label")).to_have_text("Malignant")
    expect(card.locator(".meta")).to_contain_text("not available for this model")
    expect(card.locator(".result__domain")).to_have_count(0)
