"""A student launches a desktop from the dashboard and sees it drawn in Chromium."""

import pytest

from tests.conftest import screenshot
from tests.test_pages_browser import login
from workspaces.lib.redis import redis_client

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


def open_running_desktop(page, live_server_url, make_user, username: str) -> int:
    """Launch a desktop alone through the API and open its viewer; the workspace id."""
    from tests.support.e2e import wait_for_state

    make_user(username)
    login(page, live_server_url, username)
    page.wait_for_url(f"{live_server_url}/student/")
    ws_id = page.evaluate(
        """async () => {
            const csrf = document.cookie.match(/csrftoken=([^;]+)/)[1];
            const r = await fetch('/api/workspaces/', {method: 'POST', headers: {
                'Content-Type': 'application/json', 'X-CSRFToken': csrf},
                body: JSON.stringify({display: 'desktop', apps: []})});
            return (await r.json()).id;
        }"""
    )
    assert wait_for_state(ws_id, {"running", "failed"}).state == "running"
    return ws_id


def test_the_viewer_loads_itself_again_when_novnc_failed_to_load(page, live_server_url, make_user, engine):
    # What a browser on the Docker host sees when an engine network comes or
    # goes mid-request (net::ERR_NETWORK_CHANGED): a module that fails once.
    failures = []

    def fail_once(route):
        if not failures:
            failures.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route("**/static/novnc/core/rfb.js", fail_once)
    ws_id = open_running_desktop(page, live_server_url, make_user, "hopper")
    page.goto(f"{live_server_url}/workspaces/{ws_id}/")
    page.wait_for_selector("#overlay", state="hidden", timeout=30000)
    assert failures, "the test did not fail the module load it is about"
    assert canvas_colours(page) > 5


def test_a_dropped_connection_comes_back_with_a_fresh_token(
    page, live_server_url, make_user, engine, display_proxy_url
):
    from workspaces.display import tokens as display_tokens

    ws_id = open_running_desktop(page, live_server_url, make_user, "lovelace")
    tokens = []
    page.on("request", lambda r: tokens.append(r.url) if r.url.endswith("/display-token/") else None)
    # The viewer's promise: one display connection at a time, never a second
    # beside it. Playwright forgets a page's sockets when it navigates without
    # saying they closed; the browser closes them then, so the count starts again.
    proxy_sockets, open_now, most_open = [], set(), []

    def opened(socket) -> None:
        if not socket.url.startswith(display_proxy_url):
            return
        proxy_sockets.append(socket.url)
        open_now.add(socket)
        most_open.append(len(open_now))
        socket.on("close", lambda closed: open_now.discard(closed))

    page.on("websocket", opened)
    page.on("framenavigated", lambda frame: open_now.clear() if frame == page.main_frame else None)
    page.goto(f"{live_server_url}/workspaces/{ws_id}/")
    page.wait_for_selector("#overlay", state="hidden", timeout=30000)
    # Not exactly one token: a network change on the Docker host
    # (net::ERR_NETWORK_CHANGED, an engine network coming or going) can drop a
    # connection or a request, and the viewer rightly tries again with a new
    # token; what must hold is one socket at a time, each with its own token.
    connected_with = len(tokens)
    assert connected_with >= 1
    assert len(open_now) == 1
    # The proxy ends every open connection of the workspace (as on a network drop) ...
    display_tokens.revoke(redis_client(), ws_id)
    page.wait_for_selector("#overlay", state="visible", timeout=10000)
    # ... and the viewer, finding the workspace still running, connects again with a new token.
    page.wait_for_selector("#overlay", state="hidden", timeout=30000)
    assert len(tokens) > connected_with
    assert len(open_now) == 1
    assert max(most_open) == 1, f"more than one display connection open at once: {proxy_sockets}"
    assert len(set(proxy_sockets)) == len(proxy_sockets), "a token was used twice"
    assert canvas_colours(page) > 5
    screenshot(page, "viewer-reconnected")
