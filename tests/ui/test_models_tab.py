"""The Models tab: test and external metrics per version, a row per collection; promotion and
rollback with the write token."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from shared.storage import ObjectStore
from tests.support.system import RunningSystem
from tests.ui import data
from tests.ui.browsing import has_no_sideways_scroll, open_ui, screenshot
from tests.ui.conftest import WRITE_TOKEN

# Version names as the trainer makes them: the longest text in the models table.
SHIPPED = "20261127T173808Z-ad4a0b"
NEWER = "20261203T091500Z-3f9c21"


@pytest.fixture
def two_versions(store: ObjectStore) -> ObjectStore:
    """test-v1 in production, the newer test-v2 beside it."""
    data.publish_brightness_version(store, "test-v1", auc=0.86, sensitivity=0.9, specificity=0.74, promote=True)
    data.publish_brightness_version(store, "test-v2", auc=0.88, sensitivity=0.91, specificity=0.76)
    return store


def production(system: RunningSystem) -> str:
    return requests.get(f"{system.gateway_url}/api/v1/models", timeout=10).json()["production"]


@pytest.mark.write_token
def test_a_version_is_promoted_and_rolled_back_after_the_token_is_given(
    page: Page, system: RunningSystem, two_versions: ObjectStore, screenshots: Path
) -> None:
    system.start_gateway()
    open_ui(page, system, "models")

    rows = page.locator(".models-table tbody")  # a row group per version
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
def test_the_audit_log_shows_once_the_token_is_given(
    page: Page, system: RunningSystem, two_versions: ObjectStore, screenshots: Path
) -> None:
    system.start_gateway()
    open_ui(page, system, "models")
    audit = page.locator("#audit-table")
    expect(audit.get_by_role("button", name="Show the audit log")).to_be_visible()
    expect(audit.locator("table")).to_have_count(0)  # nothing without the token

    page.get_by_role("button", name="Promote test-v2").click()
    page.get_by_label("Write token", exact=True).fill(WRITE_TOKEN)
    page.locator("#token-dialog").get_by_role("button", name="Continue").click()
    expect(page.locator("#models-status")).to_contain_text("Production is now test-v2")
    page.get_by_role("button", name="Roll back to test-v1").click()
    expect(page.locator("#models-status")).to_contain_text("Production is now test-v1")

    rows = audit.locator("tbody tr")
    expect(rows).to_have_count(2)  # newest first
    expect(rows.nth(0)).to_contain_text("Rolled back")
    expect(rows.nth(0)).to_contain_text("test-v2 → test-v1")
    expect(rows.nth(0)).to_contain_text("rolled back from the web UI")
    expect(rows.nth(1)).to_contain_text("Promoted")
    expect(rows.nth(1)).to_contain_text("test-v1 → test-v2")
    expect(rows.nth(1)).to_contain_text("write-token from 127.0.0.1")
    screenshot(page, screenshots, "models-audit-log")

    # Forgetting the token hides the log again.
    page.get_by_role("button", name="Forget write token").click()
    expect(audit.locator("table")).to_have_count(0)
    expect(audit.get_by_role("button", name="Show the audit log")).to_be_visible()


@pytest.mark.write_token
def test_cancelling_the_token_question_changes_nothing(
    page: Page, system: RunningSystem, two_versions: ObjectStore
) -> None:
    system.start_gateway()
    open_ui(page, system, "models")
    page.get_by_role("button", name="Promote test-v2").click()
    expect(page.locator("#token-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#token-dialog")).to_be_hidden()
    expect(page.locator("#models-status")).to_contain_text("Could not promote: Cancelled")
    assert production(system) == "test-v1"


def test_each_version_shows_its_test_metrics_then_a_row_per_collection_external_ones_marked(
    page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    # The shipped version's card was made before collections: it has neither external nor collection figures.
    data.publish_brightness_version(
        store, SHIPPED, auc=0.86, sensitivity=0.9, specificity=0.74, promote=True, legacy=True
    )
    external = data.external_evaluation("Derm7pt", auc=0.78, sensitivity=0.79, specificity=0.6)
    # ham10000 with its own threshold, clinic-north at the global one, derm7pt external.
    data.publish_brightness_version(store, NEWER, auc=0.88, sensitivity=0.91, specificity=0.76, external=external)
    system.start_gateway()
    open_ui(page, system, "models")

    versions = page.locator(".models-table tbody")
    expect(versions).to_have_count(2)
    newest, older = versions.nth(0), versions.nth(1)
    # The version's name heads all of its rows (a row group), each row named by what it was evaluated on.
    expect(newest.locator('th[scope="rowgroup"]')).to_contain_text(NEWER)
    expect(newest.locator('th[scope="rowgroup"]')).to_have_attribute("rowspan", "4")
    expect(newest.locator('th[scope="row"]')).to_have_count(4)
    test_row = newest.locator("tr.evaluation--test")
    expect(test_row.locator('th[scope="row"]')).to_contain_text("Test split")
    expect(test_row.locator('td[data-label="AUC (95% CI)"]')).to_have_text("0.880 (0.84–0.91)")
    expect(test_row.locator('td[data-label="Threshold"]')).to_have_text("0.500global threshold")
    # The external collection has its own collection row: no pooled external row repeats it.
    expect(newest.locator("tr.evaluation--external")).to_have_count(0)

    # A row per collection: trained-on ones by name, then external ones, each marked.
    collections = newest.locator("tr.evaluation--collection")
    expect(collections.locator(".collection")).to_have_text(["clinic-north", "ham10000", "derm7pt"])
    expect(collections.locator(".badge--external")).to_have_count(1)
    ham = newest.locator('tr[data-collection="ham10000"]')
    expect(ham.locator('th[scope="row"]')).to_contain_text("held-out part")
    expect(ham.locator('td[data-label="AUC (95% CI)"]')).to_have_text("0.890 (0.85–0.92)")
    expect(ham.locator('td[data-label="Sensitivity"]')).to_have_text("91.0%")
    expect(ham.locator('td[data-label="Specificity"]')).to_have_text("74.0%")
    expect(ham.locator('td[data-label="Images"]')).to_have_text("1500300 malignant")
    expect(ham.locator('td[data-label="Images"] .version__detail')).to_have_text("300 malignant")
    expect(ham.locator('td[data-label="Threshold"]')).to_have_text("0.420own threshold")
    clinic = newest.locator('tr[data-collection="clinic-north"]')
    expect(clinic.locator('td[data-label="Images"]')).to_have_text("409 malignant")
    expect(clinic.locator('td[data-label="Threshold"]')).to_have_text("0.500global threshold")
    derm7pt = newest.locator('tr[data-collection="derm7pt"]')
    expect(derm7pt.locator(".badge--external")).to_have_text("External")
    expect(derm7pt.locator('th[scope="row"]')).to_contain_text("never trained on")
    expect(derm7pt.locator('td[data-label="Images"]')).to_have_text("1011252 malignant")
    expect(derm7pt.locator('td[data-label="Threshold"]')).to_have_text("0.500global threshold")

    # A card from before: what it has, and "not measured" instead of external numbers; no collection rows.
    expect(older.locator('th[scope="row"]')).to_have_count(2)
    expect(older.locator("tr.evaluation--collection")).to_have_count(0)
    expect(older.locator("tr.evaluation--external td")).to_have_text("not measured")
    expect(older.locator("tr.evaluation--test td[data-label='Sensitivity']")).to_have_text("90.0%")
    expect(older.locator("tr.evaluation--test th[scope='row']")).to_contain_text("in-domain")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    table_scroll = page.locator("#models-table")
    assert table_scroll.evaluate("node => node.scrollWidth <= node.clientWidth"), "the table scrolls sideways"
    screenshot(page, screenshots, "models-collections")


def test_on_a_narrow_screen_each_collection_is_a_block_of_the_versions_card(
    narrow_page: Page, system: RunningSystem, store: ObjectStore, screenshots: Path
) -> None:
    external = data.external_evaluation("Derm7pt", auc=0.78, sensitivity=0.79, specificity=0.6)
    data.publish_brightness_version(
        store, NEWER, auc=0.88, sensitivity=0.91, specificity=0.76, external=external, promote=True
    )
    system.start_gateway()
    open_ui(narrow_page, system, "models")
    ham = narrow_page.locator('tr[data-collection="ham10000"]')
    expect(ham).to_be_visible()
    expect(ham.locator('td[data-label="Threshold"]')).to_be_visible()
    screenshot(narrow_page, screenshots, "models-collections-narrow")
    assert has_no_sideways_scroll(narrow_page), "the models tab scrolls sideways at 375 px"
