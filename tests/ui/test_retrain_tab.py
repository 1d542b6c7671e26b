"""The Retrain tab: labelled uploads into a collection, then a quick training run followed to its
gate decision; job records written to the store show a running job's stage and time left, and
finished jobs their gate on the test split, the external collection and each collection (jobs
from before collections keep their old tables)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from services.trainer.gate import decide, metric_summary
from shared import dataset
from shared.settings import Settings
from shared.storage import ObjectStore, get_json, layout
from tests.support.imports import import_queued
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
    seeded = data.seed_dataset(
        store, per_class=12, max_bytes=s3_settings.max_upload_bytes, max_pixels=s3_settings.max_image_pixels
    )
    system.env["TRAINING_PROFILE"] = "quick"
    system.start_service("trainer", "services.trainer", "trainer_metrics_port", "serve")
    system.start_gateway()
    open_ui(page, system, "retrain")

    # Upload: two new dark images as benign into the seeded collection, and one file that is not an image.
    # (Not into a collection of their own: one of them is held out, and a held-out part with a single
    # class has no AUC.)
    new_images = [upload(f"new-{index}.jpg", data.lesion_jpeg(50, seed=900 + index)) for index in range(2)]
    page.get_by_label("Benign").check()
    collection = page.locator("#panel-retrain").get_by_label("Collection")
    expect(collection).to_have_value("uploads")  # the API's default
    collection.fill("ham10000")
    page.set_input_files("#upload-files", [*new_images, upload("readme.jpg", b"not an image at all")])
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#token-dialog")).to_be_visible()
    page.get_by_label("Write token", exact=True).fill(WRITE_TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#upload-status")).to_have_text(
        re.compile(
            r"^Done: 2 added to ham10000 as benign \([0-2] of them held out for testing\),"
            r" 0 already in the dataset, 1 rejected\. The trainer adds them to the dataset in a moment\.$"
        )
    )
    expect(page.locator("#upload-added")).to_have_text("2")
    held_out = int(page.locator("#upload-held-out").inner_text())
    # The gateway staged them; the trainer's import loop puts them into the collection.
    deadline = time.monotonic() + 30
    while len(list(dataset.iter_images(store, "ham10000"))) < len(seeded) + 2:
        assert time.monotonic() < deadline, "the trainer did not import the upload"
        time.sleep(0.2)
    assert held_out == sum(image.part == "test" for image in dataset.iter_images(store, "ham10000")) - 24
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
    table = gate.locator("table").first
    expect(table.locator("thead")).to_contain_text("Candidate")
    expect(table.locator("thead")).to_contain_text("Production (test-v1)")
    expect(table.locator("tbody tr")).to_have_count(7)
    # The test split: every trained-on collection's held-out part, the seeded 24 and the uploads held out.
    expect(table.locator("tbody tr", has_text="Test images")).to_contain_text(str(24 + held_out))
    # Then each collection: the seeded one is too small to be judged (12 malignant), so reported, not judged.
    seeded = gate.locator('.gate__collections tr[data-collection="ham10000"]')
    expect(seeded.locator(".verdict")).to_have_text("Reported, not judged")
    expect(seeded.locator("th")).to_contain_text(f"{24 + held_out} images, 12 malignant")
    expect(page.locator("#train-eta")).to_be_hidden()
    expect(page.get_by_role("button", name="Start retraining")).to_be_enabled()
    screenshot(page, screenshots, "retrain-gate")

    # A reload picks the finished job up again.
    page.reload()
    expect(page.locator("#train-gate .gate")).to_be_visible()


@pytest.mark.write_token
def test_an_upload_goes_to_the_collection_and_patient_given_and_says_how_many_were_held_out(
    page: Page, system: RunningSystem, store: ObjectStore, s3_settings: Settings, screenshots: Path
) -> None:
    system.start_gateway()
    page.add_init_script(f"sessionStorage.setItem('slc.writeToken', {WRITE_TOKEN!r})")
    open_ui(page, system, "retrain")

    images = [upload(f"north-{index}.jpg", data.lesion_jpeg(70, seed=700 + index)) for index in range(3)]
    page.get_by_label("Malignant").check()
    expect(page.locator("#upload-collection-hint")).to_contain_text("A clinic should use its own name")
    # A name the API would refuse is caught in the page, and nothing is sent.
    page.locator("#panel-retrain").get_by_label("Collection").fill("Clinic North")
    page.set_input_files("#upload-files", images)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("The collection must be 1 to 40 characters")
    expect(page.locator("#panel-retrain").get_by_label("Collection")).to_be_focused()

    page.locator("#panel-retrain").get_by_label("Collection").fill("clinic-north")
    page.get_by_label("Patient").fill("p-0042")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("Done: 3 added to clinic-north as malignant")
    import_queued(s3_settings, store)  # the trainer's part: the gateway only staged them

    # Sent with the collection and the patient: one patient's images go to the same part, all
    # three held out or none.
    stored = list(dataset.iter_images(store, "clinic-north"))
    assert len(stored) == 3 and {image.label for image in stored} == {"malignant"}
    held_out = sum(image.part == "test" for image in stored)
    assert held_out in (0, 3)
    expect(page.locator("#upload-status")).to_have_text(
        f"Done: 3 added to clinic-north as malignant ({held_out} of them held out for testing),"
        " 0 already in the dataset, 0 rejected. The trainer adds them to the dataset in a moment."
    )
    expect(page.locator("#upload-held-out")).to_have_text(str(held_out))
    patients = {}
    for key in store.list(f"{layout.dataset_prefix('clinic-north')}patients/"):
        patients.update(get_json(store, key))
    assert set(patients.values()) == {"p-0042"} and len(patients) == 3
    screenshot(page, screenshots, "retrain-upload-collection")


def test_a_running_job_shows_its_stage_epoch_and_time_left(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    job_id = "20261201T120000Z-89abcdef"
    loading = {"stage": "loading", "epoch": 0, "epochs": 10, "metrics": {}, "eta_seconds": None, "elapsed_seconds": 4.2}
    data.save_running_job(store, job_id, loading)
    system.start_gateway()
    open_ui(page, system, "retrain")

    expect(page.locator("#train-status")).to_contain_text(f"Job {job_id}: Training…")
    # Before the trainer knows how many images there are, it has no estimate.
    expect(page.locator("#train-eta")).to_have_text("Time left: estimating…")
    expect(page.locator("#train-progress-detail")).to_contain_text("Loading the images")
    expect(page.locator("#train-progress-detail")).not_to_contain_text("epoch")
    expect(page.get_by_role("button", name="Start retraining")).to_be_disabled()

    # The page polls: the next record shows the epoch and the estimate, in minutes.
    training = {
        "stage": "training",
        "epoch": 3,
        "epochs": 10,
        "metrics": {"val_auc": 0.8123, "loss": 0.4121},
        "eta_seconds": 250.0,
        "elapsed_seconds": 125.0,
    }
    data.save_running_job(store, job_id, training)
    detail = page.locator("#train-progress-detail")
    expect(detail).to_contain_text("Training · epoch 3 of 10 · validation AUC 0.812 · loss 0.412")
    expect(page.locator("#train-eta")).to_have_text("Time left: about 4 minutes")
    # The bar follows the time spent and the time left: 125 of 375 seconds.
    expect(page.locator("#train-progress")).to_have_attribute("value", "33")
    screenshot(page, screenshots, "retrain-running")

    evaluating = {**training, "stage": "evaluating", "epoch": 10, "eta_seconds": 40.0, "elapsed_seconds": 400.0}
    data.save_running_job(store, job_id, evaluating, status="evaluating")
    expect(detail).to_contain_text("Evaluating the candidate · epoch 10 of 10")
    expect(page.locator("#train-eta")).to_have_text("Time left: under a minute")
    expect(page.locator("#train-status")).to_contain_text(
        "Evaluating the candidate on every collection's held-out part"
    )


def collection(auc: float, *, n_malignant: int, external: bool = False, name: str | None = None) -> dict[str, Any]:
    """One collection's held-out metrics; `name` gives it its own threshold."""
    return data.collection_metrics(
        auc,
        0.9,
        0.7,
        n=n_malignant * 4,
        n_malignant=n_malignant,
        threshold=0.42 if name else 0.5,
        own=name is not None,
        name=name,
        external=external,
    )


def test_a_job_rejected_on_one_collection_shows_each_collection_judged_or_reported(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    # Better on HAM10000, worse on Derm7pt (both judged); a small clinic only reported.
    pooled_candidate = data.test_metrics(auc=0.88, sensitivity=0.91, specificity=0.76)
    pooled_production = data.test_metrics(auc=0.86, sensitivity=0.9, specificity=0.74)
    external_candidate = data.external_evaluation("Derm7pt", auc=0.74, sensitivity=0.83, specificity=0.55)["metrics"]
    external_production = data.external_evaluation("Derm7pt", auc=0.78, sensitivity=0.79, specificity=0.6)["metrics"]
    candidate = data.evaluation(
        pooled_candidate,
        {
            "ham10000": collection(0.89, n_malignant=300, name="ham10000"),
            "clinic-north": collection(0.7, n_malignant=9),
            "derm7pt": {**external_candidate, "threshold": 0.5, "threshold_collection": None, "external": True},
        },
        external_candidate,
    )
    production = data.evaluation(
        pooled_production,
        {
            "ham10000": collection(0.87, n_malignant=300, name="ham10000"),
            "clinic-north": collection(0.8, n_malignant=9),
            "derm7pt": {**external_production, "threshold": 0.5, "threshold_collection": None, "external": True},
        },
        external_production,
    )
    gate = decide(
        candidate,
        production,
        production_version="test-v1",
        auc_tolerance=0.005,
        sensitivity_tolerance=0.02,
        min_malignant=30,
    )
    assert gate["passed"] is False
    data.save_finished_job(store, "20261201T120000Z-fedc0123", "test-v2", gate)
    system.start_gateway()
    open_ui(page, system, "retrain")

    decision = page.locator("#train-gate .gate--failed")
    expect(decision.locator(".gate__title")).to_have_text("Gate not passed: production stays test-v1")
    expect(decision.locator(".gate__reasons li")).to_have_count(len(gate["reasons"]))
    expect(decision.locator(".gate__reasons")).to_contain_text("derm7pt: AUC 0.7400 < production 0.7800")
    pooled = decision.locator("table").first
    expect(pooled.locator(".gate__group--test th[scope='rowgroup']")).to_contain_text("held-out parts pooled")

    table = decision.locator("table.gate__collections")
    expect(table.locator("caption")).to_contain_text("with at least 30 cases of each class are judged")
    expect(table.locator("thead th")).to_have_text(
        ["Collection", "Candidate AUC (test-v2)", "Production AUC (test-v1)", "Change", "Gate"]
    )
    # Trained-on collections by name, then the external one.
    expect(table.locator("tbody .collection")).to_have_text(["clinic-north", "ham10000", "derm7pt"])
    ham = table.locator('tr[data-collection="ham10000"]')
    expect(ham.locator("td")).to_have_text(["0.890", "0.870", "+0.020", "Judged: passed"])
    expect(ham.locator(".delta--better")).to_have_count(1)
    expect(ham.locator("th")).to_contain_text("1,200 images, 300 malignant")
    derm7pt = table.locator('tr[data-collection="derm7pt"]')
    expect(derm7pt.locator(".badge--external")).to_have_text("External")
    expect(derm7pt.locator("td")).to_have_text(["0.740", "0.780", "−0.040", "Judged: not passed"])
    expect(derm7pt.locator(".verdict--failed")).to_have_count(1)
    # Too few malignant cases: its AUC moves by chance, so the change is shown uncoloured.
    clinic = table.locator('tr[data-collection="clinic-north"]')
    expect(clinic.locator("td")).to_have_text(["0.700", "0.800", "−0.100", "Reported, not judged"])
    expect(clinic.locator(".delta--worse")).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, screenshots, "retrain-gate-collections")


def legacy_gate(*, external: bool) -> dict[str, Any]:
    """A gate decision as the trainer recorded it before collections: better than production on
    the test split and, given `external`, worse on the external collection."""
    candidate = data.test_metrics(auc=0.88, sensitivity=0.91, specificity=0.76)
    production = data.test_metrics(auc=0.86, sensitivity=0.9, specificity=0.74)
    gate: dict[str, Any] = {
        "candidate": metric_summary(candidate),
        "production": metric_summary(production),
        "production_version": "test-v1",
        "auc_tolerance": 0.005,
        "sensitivity_tolerance": 0.02,
    }
    if not external:
        return {
            **gate,
            "passed": True,
            "reasons": [
                "AUC 0.8800 >= production 0.8600 - tolerance 0.005",
                "sensitivity 0.9100 >= production 0.9000 - tolerance 0.02",
            ],
        }
    return {
        **gate,
        "passed": False,
        "reasons": [
            "test AUC 0.8800 >= production 0.8600 - tolerance 0.005",
            "test sensitivity 0.9100 >= production 0.9000 - tolerance 0.02",
            "external AUC 0.7400 < production 0.7800 - tolerance 0.005",
            "external sensitivity not compared: the candidate's threshold was chosen on this split",
        ],
        "external_candidate": metric_summary(
            data.external_evaluation("Derm7pt", auc=0.74, sensitivity=0.83, specificity=0.55)["metrics"]
        ),
        "external_production": metric_summary(
            data.external_evaluation("Derm7pt", auc=0.78, sensitivity=0.79, specificity=0.6)["metrics"]
        ),
    }


def test_a_job_rejected_on_the_external_collection_shows_both_splits_and_every_reason(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    # A record from before collections: better on the test split, worse on the external collection.
    gate = legacy_gate(external=True)
    data.save_finished_job(store, "20261201T120000Z-0123abcd", "test-v2", gate)
    system.start_gateway()
    open_ui(page, system, "retrain")

    decision = page.locator("#train-gate .gate--failed")
    expect(decision.locator(".gate__title")).to_have_text("Gate not passed: production stays test-v1")
    expect(page.locator("#train-status")).to_contain_text("did not pass the gate")
    reasons = decision.locator(".gate__reasons li")
    expect(reasons).to_have_text(gate["reasons"])

    table = decision.locator("table")
    expect(table).to_have_count(1)  # no collections: no table of them
    expect(table.locator("thead")).to_contain_text("Candidate (test-v2)")
    expect(table.locator("thead")).to_contain_text("Production (test-v1)")
    test_split, external = table.locator(".gate__group--test"), table.locator(".gate__group--external")
    expect(test_split.locator('th[scope="rowgroup"]')).to_contain_text("Test split")
    expect(test_split.locator('th[scope="rowgroup"]')).to_contain_text("in-domain")
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
    # Records written before the external split existed have no such keys at all.
    gate = legacy_gate(external=False)
    data.save_finished_job(store, "20261201T120000Z-4567cdef", "test-v2", gate)
    system.start_gateway()
    open_ui(page, system, "retrain")

    decision = page.locator("#train-gate .gate--passed")
    expect(decision.locator(".gate__title")).to_have_text("Gate passed: test-v2 is now in production")
    expect(decision.locator(".gate__reasons li")).to_have_text(gate["reasons"])
    table = decision.locator("table")
    expect(table.locator("caption")).to_have_text("Candidate and production on the same test split")
    expect(table.locator("tbody")).to_have_count(1)
    expect(table.locator("tbody tr")).to_have_count(7)
    expect(table.locator('th[scope="rowgroup"]')).to_have_count(0)
    expect(table.locator("tbody tr", has_text="Test images")).to_contain_text("200")
