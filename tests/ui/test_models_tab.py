"""The Models tab: promotion and rollback with the write token."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from shared.storage import ObjectStore
from tests.support.system import RunningSystem
from tests.ui import data
from tests.ui.browsing import open_ui, screenshot
from tests.ui.conftest import WRITE_TOKEN


def production(system: RunningSystem) -> str:
    return requests.get(f"{system.gateway_url}/api/v1/models", timeout=10).json()["production"]


@pytest.mark.write_token
def test_a_version_is_promoted_and_rolled_back_after_the_token_is_given(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    data.publish_brightness_version(store, "test-v1", auc=0.86, sensitivity=0.9, specificity=0.74, promote=True)
    data.publish_brightness_version(store, "test-v2", auc=0.88, sensitivity=0.91, specificity=0.76)
    system.start_gateway()
    open_ui(page, system, "models")

    rows = page.locator(".models-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("test-v2")  # newest first
    expect(rows.nth(1).locator(".badge--production")).to_have_text("Production")
    expect(rows.nth(0)).to_contain_text("0.880 (0.84–0.91)")
    screenshot(page, screenshots, "models-before")

    # A wrong token is refused with a message, and asked for again.
    page.get_by_role("button", name="Promote test-v2").click()
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.get_by_label("Write token", exact=True).fill("wrong-token")
    page.keyboard.press("Enter")
    expect(page.locator("#token-dialog-message")).to_contain_text("did not accept")
    screenshot(page, screenshots, "models-token-refused")
    page.get_by_label("Write token", exact=True).fill(WRITE_TOKEN)
    dialog.get_by_role("button", name="Continue").click()

    expect(page.locator("#models-status")).to_have_text(
        "Production is now test-v2 (was test-v1). Workers switch to it within seconds."
    )
    expect(rows.nth(0).locator(".badge--production")).to_be_visible()
    assert production(system) == "test-v2"
    screenshot(page, screenshots, "models-promoted")

    # The token is kept for the tab: the rollback asks for nothing.
    page.get_by_role("button", name="Roll back to test-v1").click()
    expect(page.locator("#models-status")).to_contain_text("Production is now test-v1 (was test-v2)")
    expect(dialog).to_be_hidden()
    assert production(system) == "test-v1"

    page.get_by_role("button", name="Forget write token").click()
    expect(page.get_by_role("button", name="Forget write token")).to_be_hidden()


@pytest.mark.write_token
def test_cancelling_the_token_question_changes_nothing(page: Page, system: RunningSystem, store: ObjectStore) -> None:
    data.publish_brightness_version(store, "test-v1", auc=0.86, sensitivity=0.9, specificity=0.74, promote=True)
    data.publish_brightness_version(store, "test-v2", auc=0.88, sensitivity=0.91, specificity=0.76)
    system.start_gateway()
    open_ui(page, system, "models")
    page.get_by_role("button", name="Promote test-v2").click()
    expect(page.locator("#token-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#token-dialog")).to_be_hidden()
    expect(page.locator("#models-status")).to_contain_text("Could not promote: Cancelled")
    assert production(system) == "test-v1"
