"""How the gateway serves the UI's files: caching and security headers."""

from __future__ import annotations

import requests

from tests.support.system import RunningSystem


def test_the_page_and_its_modules_are_revalidated_and_locked_down(system: RunningSystem) -> None:
    system.start_gateway()
    page = requests.get(f"{system.gateway_url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-cache"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert '<script type="module" src="/ui-static/js/app.js">' in page.text

    module = requests.get(f"{system.gateway_url}/ui-static/js/app.js", timeout=10)
    assert module.status_code == 200
    assert "javascript" in module.headers["Content-Type"]
    assert module.headers["X-Content-Type-Options"] == "nosniff"
    again = requests.get(
        f"{system.gateway_url}/ui-static/js/app.js", headers={"If-None-Match": module.headers["ETag"]}, timeout=10
    )
    assert again.status_code == 304

    assert requests.get(f"{system.gateway_url}/ui-static/../ui.py", timeout=10).status_code == 404
