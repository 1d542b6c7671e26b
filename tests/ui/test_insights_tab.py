"""The Insights tab, fed by the real insights service and the production model's card."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Page, expect

from shared.errors import ObjectNotFound
from shared.settings import Settings
from shared.storage import ObjectStore, get_json
from tests.support.system import RunningSystem
from tests.ui import data
from tests.ui.browsing import open_ui, screenshot

SNAPSHOT_TIMEOUT_S = 60


def wait_for_snapshot(store: ObjectStore, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return get_json(store, "insights/snapshots/latest.json")
        except ObjectNotFound:
            time.sleep(0.5)
    raise TimeoutError(f"the insights service wrote no snapshot within {timeout_s}s")


def test_insights_draws_the_snapshot_and_the_production_models_evaluation(
    page: Page, system: RunningSystem, store: ObjectStore, s3_settings: Settings, screenshots: Path
) -> None:
    data.seed_dataset(
        store, per_class=4, max_bytes=s3_settings.max_upload_bytes, max_pixels=s3_settings.max_image_pixels
    )
    data.publish_brightness_version(store, "test-v1", auc=0.86, sensitivity=0.9, specificity=0.74, promote=True)
    system.start_service("insights", "services.insights", "insights_metrics_port")
    snapshot = wait_for_snapshot(store, SNAPSHOT_TIMEOUT_S)
    system.start_gateway()
    open_ui(page, system, "insights")

    content = page.locator("#insights-content")
    expect(page.locator("#insights-status")).to_contain_text("Snapshot of")
    images = content.locator(".stat").filter(has=page.get_by_text("Images", exact=True))
    expect(images).to_contain_text(str(snapshot["image_count"]))
    # Classes per split: a bar per class for each split the snapshot counts.
    splits = [split for split in ("train", "test", "incoming") if split in snapshot["counts"]]
    counts = content.locator("figure", has_text="Classes per split")
    expect(counts.locator("rect.chart__bar")).to_have_count(2 * len(splits))
    expect(counts.locator("rect.series--malignant").first.locator("title")).to_have_text("train, malignant: 4")
    # Image sizes: every seeded image is 48 x 48, one dot.
    sizes = content.locator("figure", has_text="Image sizes")
    expect(sizes.locator("circle.chart__point")).to_have_count(len(snapshot["sizes"]["points"]))
    # Intensity: a line per class; the channel can be changed.
    intensity = content.locator("figure", has_text="Pixel intensity")
    expect(intensity.locator("path.chart__line")).to_have_count(2)
    intensity.get_by_label("Channel").select_option("red")
    expect(intensity.locator("svg")).to_have_attribute(
        "aria-label", "Histogram of red intensity, benign and malignant images"
    )

    # The production model: ROC curve and confusion matrix from its card.
    expect(page.locator("#insights-model-title")).to_have_text("Production model test-v1")
    roc = content.locator("figure", has_text="ROC curve")
    expect(roc.locator("path.series--roc")).to_have_count(1)
    expect(roc.locator("circle.series--operating")).to_have_count(1)
    matrix = content.locator("table.cm")
    expect(matrix.locator("td.cm__cell")).to_have_count(4)
    expect(matrix.locator('td[aria-label="true positives: 45"]')).to_be_visible()
    expect(content.locator(".stat", has_text="ROC AUC")).to_contain_text("0.860")
    screenshot(page, screenshots, "insights")
