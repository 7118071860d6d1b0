"""A student launches a desktop from the dashboard and sees it drawn in Chromium."""

import pytest

from tests.conftest import screenshot
from tests.test_pages_browser import login

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.docker]


def canvas_colours(page) -> int:
    """How many distinct colours a sample of the noVNC canvas has."""
    return page.evaluate("""() => {
        const canvas = document.querySelector('#screen canvas');
        const ctx = canvas.getContext('2d');
        const {width, height} = canvas;
        const data = ctx.getImageData(0, 0, width, height).data;
        const seen = new Set();
        for (let i = 0; i < data.length; i += 4 * 997) seen.add(`${data[i]},${data[i+1]},${data[i+2]}`);
        return seen.size;
    }""")


def test_student_launches_and_sees_the_desktop(page, live_server_url, make_user, engine):
    make_user("grace")
    login(page, live_server_url, "grace")
    page.wait_for_url(f"{live_server_url}/student/")
    page.wait_for_selector("#live-indicator.on")
    screenshot(page, "dashboard-catalog")
    page.click("#launch-form button[type=submit]")
    row = page.locator("#workspaces tbody tr").first
    row.locator(".state.running").wait_for(timeout=90000)
    screenshot(page, "dashboard-running")
    row.locator("a", has_text="Open").click()
    page.wait_for_selector("#screen canvas", timeout=30000)
    page.wait_for_selector("#overlay", state="hidden", timeout=30000)
    page.wait_for_function("() => document.querySelector('#screen canvas').width > 300", timeout=30000)
    # The remote desktop follows the browser window's size.
    page.wait_for_function(
        "() => document.querySelector('#screen canvas').width === window.innerWidth", timeout=30000
    )
    page.wait_for_timeout(1500)  # let the IDE window draw
    shot = screenshot(page, "viewer-desktop")
    assert canvas_colours(page) > 5, "the canvas is blank"
    assert shot.stat().st_size > 20_000
