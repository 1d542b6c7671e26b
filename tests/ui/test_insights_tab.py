"""The Insights tab, fed by the real insights service and the production model's card."""

from __future__ import annotations

import re
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from shared import dataset
from shared.errors import ObjectNotFound
from shared.settings import Settings
from shared.storage import ObjectStore, get_json, layout, put_json
from tests.support.system import RunningSystem
from tests.ui import data
from tests.ui.browsing import has_no_sideways_scroll, open_ui, screenshot

SNAPSHOT_TIMEOUT_S = 60
PER_CLASS = 4  # ham10000's images of each class in each part
DERM7PT = {"benign": 3, "malignant": 2}  # the external collection's images, all held out


def seed_collections(store: ObjectStore, settings: Settings) -> None:
    """ham10000 with PER_CLASS dark (benign) and bright (malignant) images in each part, and
    derm7pt, external, with DERM7PT's."""
    known = dataset.known_hashes(store)
    limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_image_pixels}
    ham10000 = dataset.open_collection(store, "ham10000", external=False, holdout_fraction=0.2)
    derm7pt = dataset.open_collection(store, "derm7pt", external=True, holdout_fraction=0.2)
    values = {"benign": 60, "malignant": 190}

    def files(counts: dict[str, int], seed: int) -> list[dataset.LabelledFile]:
        made = []
        for label, count in counts.items():
            for index in range(count):
                image = data.lesion_jpeg(values[label], seed=seed + values[label] * 100 + index)
                made.append(dataset.LabelledFile(f"{label}-{index}.jpg", label, image))
        return made

    every_class = dict.fromkeys(values, PER_CLASS)
    outcomes = dataset.add_images(store, ham10000, files(every_class, 0), part="train", known=known, **limits)
    outcomes += dataset.add_images(store, ham10000, files(every_class, 10_000), part="test", known=known, **limits)
    outcomes += dataset.add_images(store, derm7pt, files(DERM7PT, 20_000), known=known, **limits)
    assert {outcome.status for outcome in outcomes} == {"added"}, outcomes


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
    seed_collections(store, s3_settings)
    data.publish_brightness_version(store, "test-v1", auc=0.86, sensitivity=0.9, specificity=0.74, promote=True)
    system.start_service("insights", "services.insights", "insights_metrics_port")
    snapshot = wait_for_snapshot(store, SNAPSHOT_TIMEOUT_S)
    system.start_gateway()
    open_ui(page, system, "insights")

    content = page.locator("#insights-content")
    expect(page.locator("#insights-status")).to_contain_text("Snapshot of")
    images = content.locator(".stat").filter(has=page.get_by_text("Images", exact=True))
    expect(images).to_contain_text(str(snapshot["image_count"]))
    # A row per collection, by name: its training and held-out images per class, and its total.
    table = content.locator("table.collections-table")
    expect(table.locator("thead th")).to_have_text(
        ["Collection", "Train", "Held out", "Total", "benign", "malignant", "benign", "malignant"]
    )
    expect(table.locator("tbody th")).to_have_text(["derm7pt external", "ham10000"])
    expect(table.locator('tr[data-collection="derm7pt"] .badge--external')).to_have_text("external")
    expect(table.locator('tr[data-collection="derm7pt"] td')).to_have_text(["0", "0", "3", "2", "5"])
    expect(table.locator('tr[data-collection="ham10000"] .badge--external')).to_have_count(0)
    expect(table.locator('tr[data-collection="ham10000"] td')).to_have_text(["4", "4", "4", "4", "16"])
    # Classes per part, pooled over the collections: a bar per class for train and held out.
    assert snapshot["counts"] == {"train": {"benign": 4, "malignant": 4}, "test": {"benign": 7, "malignant": 6}}
    counts = content.locator("figure", has_text="Classes per part")
    expect(counts.locator("text.chart__tick--x")).to_have_text(["train", "held out"])
    expect(counts.locator("rect.chart__bar")).to_have_count(4)
    malignant = counts.locator("rect.series--malignant title")
    expect(malignant).to_have_text(["train, malignant: 4", "held out, malignant: 6"])
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


def part_counts(train: tuple[int, int], test: tuple[int, int]) -> dict[str, dict[str, int]]:
    """`counts` of a snapshot from (benign, malignant) of each part."""
    return {
        "train": {"benign": train[0], "malignant": train[1]},
        "test": {"benign": test[0], "malignant": test[1]},
    }


def collections_snapshot() -> dict:
    """A snapshot of three collections, one external, with a long name and large counts."""
    collections = {
        "derm7pt": {"external": True, "counts": part_counts((0, 0), (759, 252))},
        "ham10000": {"external": False, "counts": part_counts((5046, 938), (1205, 307))},
        "isic-2020-challenge-training-images": {"external": False, "counts": part_counts((26033, 467), (6509, 117))},
    }
    counts = part_counts((31079, 1405), (8473, 676))
    return {**data.snapshot(), "image_count": 41633, "counts": counts, "collections": collections}


def test_insights_lists_every_collection_and_fits_a_narrow_screen(
    narrow_page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    put_json(store, "insights/snapshots/latest.json", collections_snapshot())
    system.start_gateway()  # no insights service: the snapshot as it would have written it
    page = narrow_page
    open_ui(page, system, "insights")

    table = page.locator("#insights-content table.collections-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator("tbody tr").first).to_have_attribute("data-collection", "derm7pt")
    expect(table.locator(".badge--external")).to_have_count(1)
    expect(table.locator('tr[data-collection="derm7pt"] .badge--external')).to_have_text("external")
    isic = table.locator('tr[data-collection="isic-2020-challenge-training-images"] td')
    expect(isic).to_have_text(["26,033", "467", "6,509", "117", "33,126"])
    counts = page.locator("#insights-content figure", has_text="Classes per part")
    benign = counts.locator("rect.series--benign title")
    expect(benign).to_have_text(["train, benign: 31,079", "held out, benign: 8,473"])
    screenshot(page, screenshots, "narrow-insights-collections")
    # The table scrolls within its box; the page does not scroll sideways.
    assert has_no_sideways_scroll(page)


def version_drift(
    predictions: int, drift: float | None, drift_max: float | None, shares: tuple[float, float], last_seen: float
) -> dict:
    """One version's entry of the insights service's drift record."""
    flagged = {"unlike_training": shares[0], "not_dermoscopy": shares[1]}
    return {
        "window": {"predictions": min(predictions, 200), "drift": drift, "flagged_share": flagged},
        "last_day": {"predictions": predictions, "flagged_share": flagged, "drift_max": drift_max},
        "last_seen": last_seen,
    }


def test_insights_shows_the_last_days_drift_and_flagged_shares_in_words(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    now = time.time()
    versions = {
        "v-clinic": version_drift(1840, 0.12, 0.16, (0.004, 0.001), now - 60),
        "v-elsewhere": version_drift(320, 0.42, 0.44, (0.046, 0.0), now - 30),
        "v-new": version_drift(40, None, None, (0.0, 0.0), now - 10),
        "v-retired": version_drift(900, 0.1, 0.1, (0.0, 0.0), now - 2 * 86_400),
    }
    record = {"computed_at": now, "threshold": 0.2, "window_size": 200, "min_window": 100, "versions": versions}
    put_json(store, layout.INSIGHTS_DRIFT, record)
    system.start_gateway()  # no insights service: the record as it would have written it
    open_ui(page, system, "insights")

    section = page.locator("section", has=page.locator("#insights-drift-title"))
    expect(page.locator("#insights-drift-title")).to_have_text("Input drift (last 24 hours)")
    table = section.locator("table.drift-table")
    # Versions served in the last day only; a retired one is left out.
    expect(table.locator("tbody th")).to_have_text(["v-clinic", "v-elsewhere", "v-new"])
    expect(table.locator('tr[data-version="v-clinic"] td')).to_have_text(
        ["1,840", "0.12", "0.16", "0.4%", "0.1%", "Like the training images"]
    )
    drifted = table.locator('tr[data-version="v-elsewhere"] td')
    expect(drifted).to_have_text(["320", "0.42", "0.44", "4.6%", "0.0%", re.compile("^Drifted: recent images differ")])
    expect(table.locator('tr[data-version="v-new"] td').last).to_have_text(
        "Not enough recent predictions to judge (40 of 100)"
    )
    expect(section.locator(".hint")).to_contain_text("above 0.20 the InputDrift alert fires")
    screenshot(page, screenshots, "insights-drift")


def test_insights_says_when_there_is_no_drift_figure_yet(page: Page, system: RunningSystem) -> None:
    system.start_gateway()
    open_ui(page, system, "insights")
    expect(page.locator("#insights-content")).to_contain_text(
        "No predictions in the last 24 hours from a model version with domain statistics"
    )


def test_no_axis_title_covers_a_tick_label_even_with_five_digit_counts(page: Page, system: RunningSystem) -> None:
    system.start_gateway()
    open_ui(page, system, "insights")
    overlaps = page.evaluate(
        """async () => {
          const { barChart, lineChart } = await import("/ui-static/js/charts.js");
          const charts = [
            barChart({ label: "bars", categories: ["Training", "Held out"],
                       series: [{ name: "benign", values: [12345, 3456] }, { name: "malignant", values: [2345, 567] }],
                       yLabel: "images" }),
            lineChart({ label: "lines", series: [{ name: "benign", points: [[0, 0], [1, 123456]] }],
                        x: { min: 0, max: 1, label: "false positive rate" },
                        y: { min: 0, max: 123456, label: "images" } }),
          ];
          const found = [];
          for (const chart of charts) {
            document.body.append(chart);
            const boxes = (selector) =>
              [...chart.querySelectorAll(selector)].map((node) => node.getBoundingClientRect());
            const titles = boxes(".chart__label");
            for (const tick of boxes(".chart__tick")) {
              for (const title of titles) {
                const apart = tick.right <= title.left || title.right <= tick.left
                  || tick.bottom <= title.top || title.bottom <= tick.top;
                if (!apart && title.width > 0) found.push(chart.getAttribute("aria-label"));
              }
            }
            chart.remove();
          }
          return found;
        }"""
    )
    assert overlaps == []
