"""After Redis restarts empty (its Channels groups and any event sent meanwhile gone), open pages resync."""

import pytest

from tests.conftest import screenshot
from tests.test_pages_browser import login
from workspaces.consumers import EPOCH_KEY
from workspaces.lib.redis import redis_client
from workspaces.models import Image, Workspace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_the_workspace_list_resyncs_after_a_redis_restart(page, live_server_url, make_user):
    rita = make_user("rita")
    display = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="D"
    )
    page.clock.install()  # time runs as usual until the test moves it on
    login(page, live_server_url, "rita")
    page.wait_for_url(f"{live_server_url}/student/")
    page.wait_for_selector("#live-indicator.on")
    assert page.locator("#workspaces tbody tr").count() == 0
    # Made while no event can reach the page (as during a Redis restart): nothing published.
    missed = Workspace.objects.create(
        owner=rita, display=display, state="stopped", message="Stopped by a test"
    )
    redis_client().delete(EPOCH_KEY)  # what a restart without persistence does to Redis
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.clock.run_for(26_000)  # the next ping finds Redis changed: the server closes the socket
    page.clock.run_for(2_000)  # events.js reconnects after its pause
    row = page.locator(f'#workspaces tbody tr[data-id="{missed.pk}"]')
    row.wait_for(timeout=10000)
    assert "Stopped by a test" in row.inner_text()
    assert sockets, "events.js did not open a new socket"
    page.wait_for_selector("#live-indicator.on")
    screenshot(page, "resynced-after-redis-restart")
