"""Browser tests of the web UI: headless Chromium (Debian's `chromium` package) driven by
Playwright, against the gateway and a worker running as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from shared.settings import Settings
from shared.storage import ObjectStore, create_store
from tests.support.system import RunningSystem, system_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
WRITE_TOKEN = "ui-test-token"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium`")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def screenshots(output_dir: Path) -> Path:
    folder = output_dir / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def watched_page(browser: Browser, **options: Any) -> Iterator[Page]:
    """A page in a fresh browser context; any script error in it fails the test."""
    context = browser.new_context(**options)
    context.set_default_timeout(15_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        # Failed requests (the 4xx answers a test provokes) are the browser's log, not errors.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    opened.on("console", on_console)
    yield opened
    context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with watched_page(browser, viewport=DESKTOP) as opened:
        yield opened


@pytest.fixture
def narrow_page(browser: Browser) -> Iterator[Page]:
    """A phone-sized page: 375 CSS pixels wide, touch."""
    with watched_page(browser, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True) as opened:
        yield opened


@pytest.fixture
def store(s3_settings: Settings) -> ObjectStore:
    return create_store(s3_settings)


@pytest.fixture
def system(
    s3_settings: Settings, models_dir: Path, output_dir: Path, request: pytest.FixtureRequest
) -> Iterator[RunningSystem]:
    """Not started: each test starts what it needs (a marker `write_token` sets WRITE_TOKEN)."""
    log_dir = output_dir / "logs" / "ui" / request.node.name
    log_dir.mkdir(parents=True, exist_ok=True)
    extra = {"write_token": WRITE_TOKEN} if request.node.get_closest_marker("write_token") else {}
    running = RunningSystem(system_env(s3_settings, models_dir, **extra), log_dir)
    try:
        yield running
    finally:
        running.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "write_token: start the system with WRITE_TOKEN set")
