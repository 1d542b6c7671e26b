"""The Predict tab against a real gateway and worker (the brightness test model); with a
collection named, its own threshold decides when the model has one; a finished card shows its
heat map on request."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from playwright.sync_api import Page, expect

from shared.serving import registry
from shared.storage import ObjectStore, get_json
from tests.support.images import encode, grainy_jpeg, solid_jpeg
from tests.support.onnx_models import brightness_model
from tests.support.system import RunningSystem
from tests.ui import data
from tests.ui.browsing import open_ui, screenshot, upload


@pytest.fixture
def predicting(system: RunningSystem) -> RunningSystem:
    system.start_worker()
    system.start_gateway()
    return system


def test_chosen_images_each_get_a_label_and_a_probability_bar_with_the_threshold(
    page: Page, predicting: RunningSystem, screenshots: Path
) -> None:
    open_ui(page, predicting)
    page.set_input_files(
        "#predict-files", [upload("bright lesion.jpg", solid_jpeg(230)), upload("dark lesion.jpg", solid_jpeg(20))]
    )
    bright = page.locator(".result", has_text="bright lesion.jpg")
    dark = page.locator(".result", has_text="dark lesion.jpg")
    expect(bright).to_have_attribute("data-label", "malignant")
    expect(dark).to_have_attribute("data-label", "benign")
    expect(bright.locator(".result__label")).to_have_text("Malignant")
    expect(dark.locator(".result__label")).to_have_text("Benign")
    expect(bright.locator(".probability__value")).to_have_text("99.2%")
    expect(bright.locator(".probability__bar")).to_have_attribute(
        "aria-label", "Probability of malignant 99.2%; global threshold 50.0%"
    )
    fill = bright.locator(".probability__fill").evaluate("node => node.style.width")
    marker = bright.locator(".probability__threshold").evaluate("node => node.style.left")
    assert float(fill.rstrip("%")) == pytest.approx(99.2, abs=0.1)
    assert marker == "50%"
    expect(bright.locator(".meta")).to_contain_text("test-v1")
    # No collection named: the global threshold decided.
    expect(bright.locator(".probability__threshold-used")).to_have_text("global threshold 50.0%")
    # "41 ms", or "1.2 s" on a loaded machine: the time is shown, in a unit.
    expect(bright.locator(".meta")).to_contain_text(re.compile(r"Time taken\s*\d+(\.\d)? (ms|s)"))
    expect(bright.locator("img")).to_have_attribute("alt", "Preview of bright lesion.jpg")
    expect(page.locator("#predict-note")).to_contain_text("not a diagnosis")
    expect(page.locator("#disclaimer")).to_be_visible()
    screenshot(page, screenshots, "predict-results")

    page.click("#predict-clear")
    expect(page.locator(".result")).to_have_count(0)


def test_an_image_to_take_again_says_why_and_a_good_one_says_nothing(
    page: Page, predicting: RunningSystem, screenshots: Path
) -> None:
    open_ui(page, predicting)
    page.set_input_files(
        "#predict-files", [upload("flat.jpg", solid_jpeg(140)), upload("textured.jpg", grainy_jpeg(140, (300, 300)))]
    )
    flat = page.locator(".result", has_text="flat.jpg")
    textured = page.locator(".result", has_text="textured.jpg")
    expect(flat.locator(".result__retake")).to_contain_text("Retake the image: it looks out of focus or blurred")
    expect(textured.locator(".result__label")).to_be_visible()
    expect(textured.locator(".result__retake")).to_have_count(0)
    screenshot(page, screenshots, "predict-retake")


def test_a_named_collection_is_sent_and_the_answer_says_which_threshold_decided(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    # clinic-north has a threshold of its own, far above the global 0.5.
    data.publish_brightness_version(
        store,
        "test-v2",
        auc=0.88,
        sensitivity=0.91,
        specificity=0.76,
        promote=True,
        collection_thresholds={"clinic-north": 0.995},
    )
    system.start_worker()
    system.start_gateway()
    open_ui(page, system)
    field = page.get_by_role("textbox", name="Collection (optional)")
    expect(page.locator("#predict-collection-hint")).to_contain_text("Your clinic's name")

    # A name the API would refuse is caught in the page: nothing is sent.
    field.fill("Clinic North")
    page.set_input_files("#predict-files", [upload("refused.jpg", solid_jpeg(230))])
    expect(page.locator("#predict-status")).to_contain_text("The collection must be 1 to 40 characters")
    expect(page.locator(".result")).to_have_count(0)

    # The same bright image: malignant at the global threshold, benign at clinic-north's own.
    field.fill("clinic-north")
    page.set_input_files("#predict-files", [upload("north.jpg", solid_jpeg(230))])
    north = page.locator(".result", has_text="north.jpg")
    expect(north).to_have_attribute("data-label", "benign")
    expect(north.locator(".probability__threshold-used")).to_have_text("threshold of collection clinic-north 99.5%")
    expect(north.locator(".probability__bar")).to_have_attribute(
        "aria-label", "Probability of malignant 99.2%; threshold of collection clinic-north 99.5%"
    )
    expect(page.locator("#predict-status")).to_have_text("")

    # A collection without its own threshold gets the global one, and says so.
    field.fill("clinic-south")
    page.set_input_files("#predict-files", [upload("south.jpg", solid_jpeg(230))])
    south = page.locator(".result", has_text="south.jpg")
    expect(south).to_have_attribute("data-label", "malignant")
    expect(south.locator(".probability__threshold-used")).to_have_text("global threshold 50.0%")
    screenshot(page, screenshots, "predict-collection")


def test_a_dropped_image_is_predicted(page: Page, predicting: RunningSystem) -> None:
    open_ui(page, predicting)
    transfer = page.evaluate_handle(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            return transfer;
        }""",
        ["dropped.jpg", base64.b64encode(solid_jpeg(230)).decode()],
    )
    page.dispatch_event("#predict-dropzone", "drop", {"dataTransfer": transfer})
    expect(page.locator(".result", has_text="dropped.jpg")).to_have_attribute("data-label", "malignant")


def test_bad_files_show_the_servers_message_and_do_not_stop_the_good_one(
    page: Page, predicting: RunningSystem, screenshots: Path
) -> None:
    open_ui(page, predicting)
    page.set_input_files(
        "#predict-files",
        [
            upload("notes.jpg", b"plain text pretending to be a JPEG\n" * 20),
            upload("animation.gif", encode(Image.new("P", (8, 8)), "GIF"), "image/gif"),
            upload("fine.jpg", solid_jpeg(20)),
        ],
    )
    text = page.locator(".result", has_text="notes.jpg")
    gif = page.locator(".result", has_text="animation.gif")
    expect(text).to_have_attribute("data-label", "error")
    expect(text.locator(".result__error")).to_contain_text("HTTP 422")
    expect(text.locator(".result__error")).to_contain_text("'notes.jpg'")
    expect(gif.locator(".result__error")).to_contain_text("HTTP 415")
    expect(gif.locator(".result__error")).to_contain_text("'animation.gif'")
    expect(page.locator(".result", has_text="fine.jpg")).to_have_attribute("data-label", "benign")
    screenshot(page, screenshots, "predict-bad-files")


def test_an_answer_that_comes_late_is_polled_for_until_it_arrives(
    page: Page, system: RunningSystem, screenshots: Path
) -> None:
    system.env["PREDICT_TIMEOUT_S"] = "1"
    system.start_gateway()  # no worker yet: the request times out with 504 and the job id
    open_ui(page, system)
    page.set_input_files("#predict-files", [upload("late.jpg", solid_jpeg(230))])
    late = page.locator(".result", has_text="late.jpg")
    expect(late.locator(".result__status")).to_have_text("The server is busy; still waiting for the answer…")
    screenshot(page, screenshots, "predict-waiting")
    system.start_worker()
    expect(late).to_have_attribute("data-label", "malignant", timeout=60_000)
    expect(late.locator(".meta")).to_contain_text("test-v1")


def test_the_heat_map_toggle_shows_where_the_model_looked_and_says_why_when_there_is_none(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    card = {"version": "heat-v1", "threshold": 0.5, "calibration": None, "serving_artifact": "model.onnx"}
    registry.publish_version(store, "heat-v1", {"model.onnx": brightness_model(class_activation=True)}, card)
    registry.promote(store, "heat-v1", reason="a version with a class activation output")
    system.start_worker()
    system.start_gateway()
    open_ui(page, system)
    pixels = np.full((450, 600, 3), 30, np.uint8)
    pixels[:64, :86] = 240  # the top-left cell of the 7x7 grid: where the brightness model "looks"
    page.set_input_files(
        "#predict-files", [upload("corner.jpg", encode(Image.fromarray(pixels))), upload("gone.jpg", solid_jpeg(230))]
    )
    corner = page.locator(".result", has_text="corner.jpg")
    gone = page.locator(".result", has_text="gone.jpg")
    expect(gone).to_have_attribute("data-label", "malignant")
    toggle = corner.get_by_role("button", name="Show where the model looked")
    expect(toggle).to_have_attribute("aria-pressed", "false")

    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    image = corner.locator("img")
    expect(image).to_have_attribute("alt", "Heat map of corner.jpg: where the model found evidence of malignant")
    expect(corner.locator(".result__heatmap-legend")).to_contain_text("where the model looked, not whether")
    shown = image.evaluate(
        """async (img) => {
            await img.decode();
            const canvas = Object.assign(document.createElement("canvas"), { width: img.naturalWidth, height: 1 });
            canvas.getContext("2d").drawImage(img, 0, -20);
            const corner = canvas.getContext("2d").getImageData(30, 0, 1, 1).data;
            return { width: img.naturalWidth, height: img.naturalHeight, corner: Array.from(corner.slice(0, 3)) };
        }"""
    )
    [result_key] = [key for key in store.list("results/predictions/") if get_json(store, key)["label"] == "benign"]
    corner_id = result_key.rpartition("/")[2].removesuffix(".json")
    served = requests.get(f"{system.gateway_url}/api/v1/predictions/{corner_id}/heatmap", timeout=30)
    expected = np.asarray(Image.open(io.BytesIO(served.content)))[20, 30]
    assert (shown["width"], shown["height"]) == (600, 450)
    assert shown["corner"] == pytest.approx(expected.tolist(), abs=2), "the card shows the served heat map"
    assert abs(shown["corner"][0] - shown["corner"][2]) > 60, "coloured, where the upload is grey"
    screenshot(page, screenshots, "predict-heatmap")

    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(image).to_have_attribute("alt", "Preview of corner.jpg")
    expect(corner.locator(".result__heatmap-legend")).to_be_hidden()

    # A prediction deleted meanwhile has no heat map, and the card says why in the server's words.
    [gone_key] = [key for key in store.list("results/predictions/") if key != result_key]
    gone_id = gone_key.rpartition("/")[2].removesuffix(".json")
    assert requests.delete(f"{system.gateway_url}/api/v1/predictions/{gone_id}", timeout=10).status_code == 204
    gone.get_by_role("button", name="Show where the model looked").click()
    expect(gone.locator(".result__heatmap-legend")).to_contain_text("No heat map: prediction")
    expect(gone.locator(".result__heatmap-legend")).to_contain_text("was deleted on request")
    expect(gone.locator("img")).to_have_attribute("alt", "Preview of gone.jpg")
