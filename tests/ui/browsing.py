"""Steps every UI test takes: open the page on a tab, hand it files, save a screenshot."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support.system import RunningSystem


def open_ui(page: Page, system: RunningSystem, tab: str = "predict") -> None:
    """Load the UI on `tab` and wait until its script has wired everything."""
    page.goto(f"{system.gateway_url}/#{tab}")
    expect(page.locator("body[data-ready]")).to_have_count(1)
    expect(page.locator(f"#tab-{tab}")).to_have_attribute("aria-selected", "true")


def upload(name: str, data: bytes, mime: str = "image/jpeg") -> dict[str, object]:
    """A file for `set_input_files`, made in memory."""
    return {"name": name, "mimeType": mime, "buffer": data}


def screenshot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def has_no_sideways_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
