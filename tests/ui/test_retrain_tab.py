"""The Retrain tab: labelled uploads, then a quick training run followed to its gate decision."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from shared.settings import Settings
from shared.storage import ObjectStore
from tests.support.system import RunningSystem
from tests.ui import data
from tests.ui.browsing import open_ui, screenshot, upload
from tests.ui.conftest import WRITE_TOKEN

# TensorFlow's import plus a quick run on two shared cores.
TRAINING_TIMEOUT_MS = 300_000


@pytest.mark.write_token
def test_labelled_uploads_are_counted_and_a_retraining_run_shows_its_gate_decision(
    page: Page, system: RunningSystem, store: ObjectStore, s3_settings: Settings, screenshots: Path
) -> None:
    data.seed_dataset(
        store, per_class=12, max_bytes=s3_settings.max_upload_bytes, max_pixels=s3_settings.max_image_pixels
    )
    system.env["TRAINING_PROFILE"] = "quick"
    system.start_service("trainer", "services.trainer", "trainer_metrics_port", "serve")
    system.start_gateway()
    open_ui(page, system, "retrain")

    # Upload: two new dark images as benign, and one file that is not an image.
    new_images = [upload(f"new-{index}.jpg", data.lesion_jpeg(50, seed=900 + index)) for index in range(2)]
    page.get_by_label("Benign").check()
    page.set_input_files("#upload-files", [*new_images, upload("readme.jpg", b"not an image at all")])
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#token-dialog")).to_be_visible()
    page.get_by_label("Write token", exact=True).fill(WRITE_TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#upload-status")).to_have_text(
        "Done: 2 added as benign, 0 already in the dataset, 1 rejected."
    )
    expect(page.locator("#upload-added")).to_have_text("2")
    expect(page.locator("#upload-duplicates")).to_have_text("0")
    expect(page.locator("#upload-rejected")).to_have_text("1")
    expect(page.locator(".file-outcome--rejected")).to_contain_text("readme.jpg — rejected: ")

    # The same images again: duplicates, and no second question for the token.
    page.set_input_files("#upload-files", new_images)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-duplicates")).to_have_text("2")
    expect(page.locator("#upload-added")).to_have_text("0")
    screenshot(page, screenshots, "retrain-uploads")

    # Retraining: progress while it runs, then the gate decision side by side.
    page.get_by_label("Fine-tuning epochs").fill("1")
    page.get_by_role("button", name="Start retraining").click()
    expect(page.locator("#train-progress-block")).to_be_visible()
    expect(page.get_by_role("button", name="Start retraining")).to_be_disabled()
    gate = page.locator("#train-gate .gate")
    expect(gate).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#train-status")).to_contain_text("Finished")
    expect(page.locator("#train-progress")).to_have_attribute("value", "100")
    table = gate.locator("table")
    expect(table.locator("thead")).to_contain_text("Candidate")
    expect(table.locator("thead")).to_contain_text("Production (test-v1)")
    expect(table.locator("tbody tr")).to_have_count(7)
    expect(table.locator("tbody tr", has_text="Test images")).to_contain_text("24")
    expect(page.get_by_role("button", name="Start retraining")).to_be_enabled()
    screenshot(page, screenshots, "retrain-gate")

    # A reload picks the finished job up again.
    page.reload()
    expect(page.locator("#train-gate .gate")).to_be_visible()
