"""Moving around the UI: keyboard only, and on a phone-sized screen."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from shared.storage import ObjectStore, put_json
from tests.support.images import solid_jpeg
from tests.support.system import RunningSystem
from tests.ui import data
from tests.ui.browsing import has_no_sideways_scroll, open_ui, screenshot, upload

TABS = ("predict", "retrain", "insights", "models")


def test_tabs_can_be_reached_and_switched_with_the_keyboard_alone(
    page: Page, system: RunningSystem, screenshots: Path
) -> None:
    system.start_gateway()
    open_ui(page, system)
    for _ in range(10):  # the skip link, then the selected tab
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "tab-predict":
            break
    assert page.evaluate("document.activeElement.id") == "tab-predict"

    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-retrain"
    expect(page.locator("#panel-predict")).to_be_visible()  # focus alone does not switch
    page.keyboard.press("Enter")
    expect(page.locator("#panel-retrain")).to_be_visible()
    expect(page.locator("#panel-predict")).to_be_hidden()
    expect(page.locator("#tab-retrain")).to_have_attribute("aria-selected", "true")
    assert page.url.endswith("#retrain")

    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.id") == "tab-models"
    page.keyboard.press(" ")
    expect(page.locator("#panel-models")).to_be_visible()
    page.keyboard.press("ArrowRight")  # wraps around
    assert page.evaluate("document.activeElement.id") == "tab-predict"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    expect(page.locator("#panel-insights")).to_be_visible()

    # Tab leaves the tab list for the panel; only the selected tab is in the tab order.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "panel-insights"
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "tab-insights"
    screenshot(page, screenshots, "keyboard-focus-on-tab")

    # The file chooser of the Predict tab is reachable and shows that it has focus.
    page.keyboard.press("Home")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "predict-files"
    outline = page.locator('label[for="predict-files"]').evaluate("node => getComputedStyle(node).outlineStyle")
    assert outline == "solid"


def test_every_tab_fits_a_375_pixel_screen_without_sideways_scrolling(
    narrow_page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    data.publish_brightness_version(store, "test-v0", auc=0.83, sensitivity=0.9, specificity=0.7)
    external = data.external_evaluation("Derm7pt", auc=0.78, sensitivity=0.79, specificity=0.6)
    data.publish_brightness_version(
        store, "test-v1", auc=0.86, sensitivity=0.9, specificity=0.74, promote=True, external=external
    )
    put_json(store, "insights/snapshots/latest.json", data.snapshot())
    system.start_worker()
    system.start_gateway()
    page = narrow_page
    open_ui(page, system)
    page.set_input_files(
        "#predict-files",
        [
            upload("a-long-file-name-without-any-spaces-at-all-0123456789.jpg", solid_jpeg(230)),
            upload("notes.jpg", b"not an image"),
        ],
    )
    expect(page.locator(".result[aria-busy]")).to_have_count(0)
    expect(page.locator(".result")).to_have_count(2)

    for tab in TABS:
        page.click(f"#tab-{tab}")
        expect(page.locator(f"#panel-{tab}")).to_be_visible()
        if tab == "insights":
            expect(page.locator("#insights-content svg.chart").first).to_be_visible()
        if tab == "models":
            expect(page.locator(".models-table tbody")).to_have_count(2)  # a row group per version
        screenshot(page, screenshots, f"narrow-{tab}")
        assert has_no_sideways_scroll(page), f"the {tab} tab scrolls sideways at 375 px"
        for tab_button in TABS:  # every tab stays visible and tappable
            assert page.locator(f"#tab-{tab_button}").is_visible()
            box = page.locator(f"#tab-{tab_button}").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
