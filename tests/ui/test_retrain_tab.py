"""The Retrain tab: labelled uploads, then a quick training run followed to its gate decision;
finished jobs written to the store show their gate on the test split and the external collection."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from services.trainer.gate import decide
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


def gate_better_on_test(**external: Any) -> dict[str, Any]:
    """The trainer's gate decision for a candidate better than production on the test split."""
    return decide(
        data.test_metrics(auc=0.88, sensitivity=0.91, specificity=0.76),
        data.test_metrics(auc=0.86, sensitivity=0.9, specificity=0.74),
        production_version="test-v1",
        auc_tolerance=0.005,
        sensitivity_tolerance=0.02,
        **external,
    )


def test_a_job_rejected_on_the_external_collection_shows_both_splits_and_every_reason(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    # Better on the test split, worse on the external collection: the gate says no.
    gate = gate_better_on_test(
        candidate_external=data.external_evaluation("Derm7pt", auc=0.74, sensitivity=0.83, specificity=0.55)["metrics"],
        production_external=data.external_evaluation("Derm7pt", auc=0.78, sensitivity=0.79, specificity=0.6)["metrics"],
    )
    data.save_finished_job(store, "20261201T120000Z-0123abcd", "test-v2", gate)
    system.start_gateway()
    open_ui(page, system, "retrain")

    decision = page.locator("#train-gate .gate--failed")
    expect(decision.locator(".gate__title")).to_have_text("Gate not passed: production stays test-v1")
    expect(page.locator("#train-status")).to_contain_text("did not pass the gate")
    reasons = decision.locator(".gate__reasons li")
    expect(reasons).to_have_text(
        [
            "test AUC 0.8800 >= production 0.8600 - tolerance 0.005",
            "test sensitivity 0.9100 >= production 0.9000 - tolerance 0.02",
            "external AUC 0.7400 < production 0.7800 - tolerance 0.005",
            "external sensitivity not compared: the candidate's threshold was chosen on this split",
        ]
    )

    table = decision.locator("table")
    expect(table.locator("thead")).to_contain_text("Candidate (test-v2)")
    expect(table.locator("thead")).to_contain_text("Production (test-v1)")
    test_split, external = table.locator(".gate__group--test"), table.locator(".gate__group--external")
    expect(test_split.locator('th[scope="rowgroup"]')).to_contain_text("Test split")
    expect(test_split.locator("tr", has_text="Test images")).to_contain_text("200")
    expect(external.locator('th[scope="rowgroup"]')).to_contain_text("External collection")
    auc = external.locator("tr", has_text="ROC AUC")
    expect(auc.locator("td")).to_have_text(["0.740", "0.780", "−0.040"])
    expect(auc.locator(".delta--worse")).to_have_count(1)
    # Sensitivity there rests on a threshold chosen on that very collection: shown, not judged.
    sensitivity = external.locator("tr", has_text="Sensitivity")
    expect(sensitivity.locator("td")).to_have_text(["83.0%", "79.0%", "+4.0 pts"])
    expect(sensitivity.locator(".delta--better")).to_have_count(0)
    expect(external.locator("tr", has_text="Specificity").locator("td")).to_have_text(["55.0%", "60.0%", "−5.0 pts"])
    # In the browser's locale: 1,011 or 1.011 or 1 011.
    expect(external.locator("tr", has_text="Images").locator("td").nth(0)).to_have_text(re.compile(r"^1\D?011$"))
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, screenshots, "retrain-gate-external")


def test_a_job_from_before_external_figures_shows_the_test_split_alone(
    page: Page, system: RunningSystem, store: ObjectStore
) -> None:
    gate = gate_better_on_test()
    # Records written before the external split existed have no such keys at all.
    del gate["external_candidate"], gate["external_production"]
    data.save_finished_job(store, "20261201T120000Z-4567cdef", "test-v2", gate)
    system.start_gateway()
    open_ui(page, system, "retrain")

    decision = page.locator("#train-gate .gate--passed")
    expect(decision.locator(".gate__title")).to_have_text("Gate passed: test-v2 is now in production")
    expect(decision.locator(".gate__reasons li")).to_have_text(
        [
            "AUC 0.8800 >= production 0.8600 - tolerance 0.005",
            "sensitivity 0.9100 >= production 0.9000 - tolerance 0.02",
        ]
    )
    table = decision.locator("table")
    expect(table.locator("caption")).to_have_text("Candidate and production on the same test split")
    expect(table.locator("tbody")).to_have_count(1)
    expect(table.locator("tbody tr")).to_have_count(7)
    expect(table.locator('th[scope="rowgroup"]')).to_have_count(0)
    expect(table.locator("tbody tr", has_text="Test images")).to_contain_text("200")
