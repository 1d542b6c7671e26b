"""The Predict tab says how long images are kept, as the gateway's configuration says."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.support.system import RunningSystem
from tests.ui.browsing import open_ui


def test_the_predict_tab_says_images_are_kept_thirty_days_by_default(page: Page, system: RunningSystem) -> None:
    system.start_gateway()
    open_ui(page, system)
    note = page.locator("#predict-retention")
    expect(note).to_be_visible()
    expect(note).to_contain_text("deleted 30 days after upload")
    expect(note).to_contain_text("metadata (EXIF, GPS position, camera) is removed")


def test_with_nothing_retained_the_predict_tab_says_so(page: Page, system: RunningSystem) -> None:
    system.env["PREDICTION_RETENTION_DAYS"] = "0"
    system.start_gateway()
    open_ui(page, system)
    expect(page.locator("#predict-retention")).to_contain_text(
        "deleted once the answer is delivered, at most one hour after upload"
    )
