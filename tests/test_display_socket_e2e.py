"""A student's attacks on the display socket, through the real display proxy and worker.

The display's socket folder is writable by the student (uid 1000 in the
display). Here the student, by `docker exec` as uid 1000 in their display,
replaces vnc.sock with a link to a host socket that this test listens on
(standing in for /var/run/docker.sock), or with a VNC server of their own,
then asks for a token and connects as a browser would. The proxy must refuse
the websocket and the host socket must receive nothing, not even a connection.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from tests.conftest import TEST_ORIGIN
from tests.support.e2e import running, sh
from tests.support.listeners import UnixListener
from tests.support.services import ARTIFACTS
from workspaces.display import tokens as display_tokens
from workspaces.display.rfb import RFBClient
from workspaces.engine.errors import StartTimeout
from workspaces.lib.redis import redis_client
from workspaces.models import Workspace
from workspaces.services import lifecycle, thumbnails
from workspaces.services.lifecycle import WrongState

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]
SOCKET = "/run/lattice-vnc/vnc.sock"  # the display's socket, as the student sees it
# What an attacker would send to the Docker engine's socket.
ATTACK = b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\n\r\n{}"


class HostListener(UnixListener):
    """A socket on this host that anyone may connect to: only the proxy's refusal stands in the way."""

    def __init__(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="lattice-test-host-"))
        folder.chmod(0o755)
        super().__init__(folder / "docker.sock", mode=0o666)

    def close(self) -> None:
        super().close()
        self.path.unlink(missing_ok=True)
        self.path.parent.rmdir()


@pytest.fixture
def host_socket():
    listener = HostListener()
    yield listener
    listener.close()


def token(client, ws_id: int, mode: str = "control") -> dict:
    response = client.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": mode}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def opened(url: str) -> bytes | None:
    """None when the proxy refuses the websocket; else what the far end said after our attack."""
    try:
        ws = connect(url, origin=TEST_ORIGIN, subprotocols=["binary"], open_timeout=10, close_timeout=1)
    except InvalidHandshake:
        return None
    with ws:
        ws.send(ATTACK)
        try:
            return ws.recv(timeout=2)
        except (TimeoutError, ConnectionClosed):
            return b""


def proxy_log() -> str:
    return (ARTIFACTS / "display-proxy.log").read_text(errors="replace")


def wait_for(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def fake_display(engine, ws_id: int) -> None:
    """The student's own Xvnc, password-less, takes vnc.sock: an RFB server in
    the display's own container, running as uid 1000, but not the display's."""
    sh(
        engine,
        ws_id,
        "display",
        f"rm -f {SOCKET}; setsid Xvnc :7 -rfbport -1 -rfbunixpath {SOCKET} -rfbunixmode 438 "
        "-SecurityTypes None -nolisten tcp -geometry 640x480 >/tmp/fake-display.log 2>&1 </dev/null &",
    )
    wait_for(
        lambda: sh(engine, ws_id, "display", f"test -S {SOCKET} && echo yes || true").strip(), "the fake"
    )


def test_a_link_to_a_host_socket_gets_no_connection_and_no_byte(engine, student, host_socket):
    ws_id = running(student, apps=())
    # The student, in their display: vnc.sock becomes a link to the host's socket.
    sh(engine, ws_id, "display", f"ln -sfn {host_socket.path} {SOCKET} && test -L {SOCKET}")
    grant = token(student, ws_id)
    answer = opened(grant["url"])
    time.sleep(0.5)
    # (websocket refused, connections to the host socket, bytes it received)
    assert (answer, host_socket.connections, host_socket.received) == (None, 0, b"")
    # The worker's thumbnail client takes the same way in: refused too.
    with pytest.raises(WrongState, match="not a socket"):
        thumbnails.capture(Workspace.objects.get(pk=ws_id))
    assert host_socket.connections == 0
    log = proxy_log()
    assert re.search(rf"REFUSED the display of workspace {ws_id}: .*not a socket", log), log[-2000:]
    assert grant["url"].split("token=")[1] not in log  # refusals never log the token


def test_a_students_own_vnc_server_in_the_folder_is_not_the_display(engine, student):
    ws_id = running(student, apps=())
    fake_display(engine, ws_id)
    for mode in ("control", "view"):
        grant = token(student, ws_id, mode)
        assert opened(grant["url"]) is None, f"{mode}: the proxy relayed to the student's own server"
    log = proxy_log()
    assert re.search(rf"REFUSED the display of workspace {ws_id}: .*not the display's VNC server", log)


def test_a_display_started_again_never_takes_the_students_server_for_its_own(engine, student):
    ws_id = running(student, apps=())
    ws = Workspace.objects.get(pk=ws_id)
    recorded = ws.engine_state["endpoint"]
    fake_display(engine, ws_id)
    # The engine asked to start the workspace again (a failed one is started so,
    # its display still running): the server on the socket now is the
    # student's, uid 1000 in the display's container, but not the first there.
    assert engine.endpoint(ws.engine_id).server_pid == 0
    with pytest.raises(StartTimeout):
        engine.start(lifecycle.spec_for(ws), timeout=3)
    assert recorded["server_pid"] > 0


def test_the_real_display_still_answers_through_the_proxy(engine, student, settings):
    ws_id = running(student, apps=())
    grant = token(student, ws_id)
    with RFBClient(grant["url"], grant["password"], origin=TEST_ORIGIN) as rfb:
        assert not rfb.frame().is_blank()
    # A display started before the engine recorded its server gets no token
    # (the API says what to do), and a grant without it is refused by the proxy.
    ws = Workspace.objects.get(pk=ws_id)
    endpoint = ws.engine_state["endpoint"]
    assert len(endpoint["container_id"]) == 64 and endpoint["server_pid"] > 0
    Workspace.objects.filter(pk=ws_id).update(engine_state={"endpoint": {"path": endpoint["path"]}})
    response = student.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": "control"}, format="json")
    assert response.status_code == 409
    assert "stop the workspace and start it again" in response.json()["detail"]
    legacy = display_tokens.Grant(workspace=ws_id, socket=endpoint["path"], mode="control", user=ws.owner_id)
    url = settings.LATTICE_DISPLAY_PROXY_URL + "?token=" + display_tokens.issue(redis_client(), legacy, 60)
    assert opened(url) is None
    assert "stop the workspace and start it again" in proxy_log()
    assert os.path.exists(endpoint["path"])
