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
    # Its card has no external evaluation: said, not left out.
    expect(content.get_by_text("External collection: not measured.")).to_be_visible()
    expect(content.locator("table.external-table")).to_have_count(0)
    screenshot(page, screenshots, "insights")


def test_insights_shows_the_production_models_external_evaluation_beside_the_test_split(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    external = data.external_evaluation("Derm7pt", auc=0.78, sensitivity=0.79, specificity=0.6)
    data.publish_brightness_version(
        store, "test-v1", auc=0.86, sensitivity=0.9, specificity=0.74, promote=True, external=external
    )
    system.start_gateway()  # no insights service: the model part stands on its own
    open_ui(page, system, "insights")

    content = page.locator("#insights-content")
    expect(page.locator("#insights-model-title")).to_have_text("Production model test-v1")
    expect(content.get_by_text("not measured")).to_have_count(0)
    table = content.locator("table.external-table")
    expect(table.locator("thead th")).to_have_text(["Metric", "Test split (in-domain)", "Derm7pt (external)"])
    expect(table.locator("tbody tr", has_text="ROC AUC")).to_contain_text("0.860 (0.82–0.89)")
    expect(table.locator("tbody tr", has_text="ROC AUC")).to_contain_text("0.780 (0.74–0.81)")
    expect(table.locator("tbody tr", has_text="Sensitivity").locator("td")).to_have_text(["90.0%", "79.0%"])
    expect(table.locator("tbody tr", has_text="Specificity").locator("td")).to_have_text(["74.0%", "60.0%"])
    expect(table.locator("tbody tr", has_text="Images").locator("td")).to_have_text(["200", "1,011"])
    expect(content.locator("figure", has=page.locator("table.external-table"))).to_contain_text("never trained on it")
    # The ROC figure draws the external curve and where the same threshold lands on it.
    roc = content.locator("figure", has_text="ROC curve")
    expect(roc.locator("path.series--roc")).to_have_count(1)
    expect(roc.locator("path.series--external")).to_have_count(1)
    expect(roc.locator("circle.series--external-operating")).to_have_count(1)
    expect(roc.locator(".legend")).to_contain_text("ROC curve (Derm7pt)")
    screenshot(page, screenshots, "insights-external")
