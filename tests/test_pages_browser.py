"""A person's view: Debian's Chromium, driven by Playwright, against the real server."""

import pytest

from tests.conftest import PASSWORD, screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def login(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_student_logs_in_and_sees_the_dashboard(page, live_server_url, make_user, celery_worker_process):
    make_user("ada")
    page.goto(f"{live_server_url}/login/")
    screenshot(page, "login")
    login(page, live_server_url, "Ada")
    page.wait_for_url(f"{live_server_url}/student/")
    assert page.inner_text("h1") == "Hello, ada"
    # The live-events socket connects (the dot turns green) ...
    page.wait_for_selector("#live-indicator.on", timeout=10000)
    # ... and a background job's progress reaches the page.
    page.click("#run-diagnostics")
    page.wait_for_selector("#diagnostics .progress.done", timeout=30000)
    assert "Everything Lattice needs is reachable" in page.inner_text("#diagnostics .step")
    assert page.locator("#diagnostics .results li.ok").count() == 3
    page.wait_for_timeout(400)  # let the bar's width transition finish for the picture
    shot = screenshot(page, "student-dashboard")
    assert shot.stat().st_size > 10_000


def test_wrong_password_is_shown(page, live_server_url, make_user):
    make_user("bob")
    page.goto(f"{live_server_url}/login/")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "do not match" in page.inner_text("[role=alert]")
