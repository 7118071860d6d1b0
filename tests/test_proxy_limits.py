"""The display proxy's bounds, through a real proxy with small limits, and the token rate limit.

A proxy of its own for this module (the session's one keeps the defaults):
clipboard text at most 4 KiB, 3 connections to a workspace, 2 per user.
"""

from __future__ import annotations

import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from tests.conftest import TEST_ORIGIN, start_display_proxy
from tests.support.e2e import running
from tests.support.fakes import endpoint_state
from workspaces.display import tokens as display_tokens
from workspaces.display.proxy import MESSAGE_SLACK
from workspaces.display.rfb import RFBClient
from workspaces.lib.redis import redis_client
from workspaces.models import Workspace
from workspaces.services import lifecycle

CLIPBOARD = 4096
PER_WORKSPACE = 3
PER_USER = 2


@pytest.fixture(scope="module")
def small_proxy():
    proxy, url = start_display_proxy(
        "display-proxy-limits",
        TEST_ORIGIN,
        LATTICE_CLIPBOARD_MAX_BYTES=str(CLIPBOARD),
        LATTICE_DISPLAY_CONNECTIONS_PER_WORKSPACE=str(PER_WORKSPACE),
        LATTICE_DISPLAY_CONNECTIONS_PER_USER=str(PER_USER),
    )
    yield url
    proxy.stop()


def grant(client, ws_id: int, proxy: str, mode: str = "control", path: str | None = None) -> dict:
    """A display token from the API, to be used on ``proxy``."""
    response = client.post(path or f"/api/workspaces/{ws_id}/display-token/", {"mode": mode}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    return {**body, "url": proxy + "?token=" + body["url"].split("token=")[1]}


def screen(g: dict) -> RFBClient:
    return RFBClient(g["url"], g["password"], origin=TEST_ORIGIN, timeout=10)


def refused(g: dict) -> bool:
    try:
        screen(g).close()
    except InvalidHandshake:
        return True
    return False


def closed_within(ws, seconds: float) -> int | None:
    """The close code the proxy sent within ``seconds``, or None when the connection stayed open."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.05, deadline - time.monotonic()))
    except TimeoutError:
        return None
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else -1
    return None


@pytest.mark.django_db(transaction=True)
@pytest.mark.docker
def test_connections_are_capped_per_user_and_per_workspace_and_released_on_close(
    engine, small_proxy, student, api_client, teammate, owner
):
    ws_id = running(student, apps=())
    ws = Workspace.objects.get(pk=ws_id)
    mine = [screen(grant(student, ws_id, small_proxy)) for _ in range(PER_USER)]
    # A third screen of the same user: refused before any websocket opens.
    assert refused(grant(student, ws_id, small_proxy))
    # Another user (here given tokens as a teacher would be) fills the workspace ...
    token, password = lifecycle.issue_display_token(ws, "view", user=teammate)
    theirs = screen({"url": f"{small_proxy}?token={token}", "password": password})
    # ... and is then refused: the workspace has its 3, though this user has only 1.
    token, password = lifecycle.issue_display_token(ws, "view", user=teammate)
    assert refused({"url": f"{small_proxy}?token={token}", "password": password})
    # Closing a screen gives its place back.
    mine.pop().close()
    deadline = time.monotonic() + 10
    while refused(grant(student, ws_id, small_proxy)):
        assert time.monotonic() < deadline, "a closed connection still counts"
        time.sleep(0.3)
    for rfb in [*mine, theirs]:
        rfb.close()
    client = redis_client()
    key = f"{display_tokens.CONNECTIONS}workspace:{ws_id}"
    deadline = time.monotonic() + 10
    while client.zcard(key):
        assert time.monotonic() < deadline, client.zrange(key, 0, -1)
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
@pytest.mark.docker
def test_a_websocket_frame_announcing_a_terabyte_is_closed_at_its_header(engine, small_proxy, student):
    ws_id = running(student, apps=())
    g = grant(student, ws_id, small_proxy)
    with connect(g["url"], origin=TEST_ORIGIN, subprotocols=["binary"], close_timeout=1) as ws:
        assert ws.recv(timeout=10).startswith(b"RFB ")
        # A masked binary frame whose header announces 2**40 bytes, and nothing after it.
        ws.socket.sendall(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 2**40) + b"mask")
        assert closed_within(ws, 5) == 1009  # "message too big", at once
    # A message just over the limit is refused the same way; one under it passes.
    g = grant(student, ws_id, small_proxy)
    with connect(g["url"], origin=TEST_ORIGIN, subprotocols=["binary"], close_timeout=1) as ws:
        ws.recv(timeout=10)
        ws.send(b"x" * (CLIPBOARD + MESSAGE_SLACK + 1))
        assert closed_within(ws, 5) == 1009


def masked_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A client's websocket frame (an all-zero mask leaves the payload as it is)."""
    header = bytes([(0x80 if fin else 0) | opcode, 0x80 | 127]) + struct.pack(">Q", len(payload))
    return header + bytes(4) + payload


@pytest.mark.django_db(transaction=True)
@pytest.mark.docker
def test_a_fragmented_message_over_the_limit_is_closed_though_each_frame_is_under_it(
    engine, small_proxy, student
):
    ws_id = running(student, apps=())
    g = grant(student, ws_id, small_proxy)
    fragment = b"x" * 60_000
    limit = CLIPBOARD + MESSAGE_SLACK
    with connect(g["url"], origin=TEST_ORIGIN, subprotocols=["binary"], close_timeout=1) as ws:
        assert ws.recv(timeout=10).startswith(b"RFB ")
        # A binary frame that is not final, then continuation frames, none final:
        # each is far under the limit, together they pass it; the proxy must not hold them all.
        ws.socket.sendall(masked_frame(0x2, fragment, fin=False))
        for _ in range(limit // len(fragment)):  # the last one takes the message past the limit
            ws.socket.sendall(masked_frame(0x0, fragment, fin=False))
        assert closed_within(ws, 5) == 1009


@pytest.mark.django_db(transaction=True)
@pytest.mark.docker
def test_view_only_clipboard_text_over_the_limit_ends_the_connection(engine, small_proxy, student):
    ws_id = running(student, apps=())
    rfb = screen(grant(student, ws_id, small_proxy, mode="view"))
    try:
        # Under the limit: dropped, the connection goes on.
        rfb.transport.ws.send(struct.pack(">BxxxI", 6, 100) + b"c" * 100)
        assert not rfb.frame().is_blank()
        # 2**31 - 1 announced (the header alone is sent): closed at once, nothing held.
        rfb.transport.ws.send(struct.pack(">Bxxxi", 6, 2**31 - 1))
        assert closed_within(rfb.transport.ws, 5) == 1008
    finally:
        rfb.close()


@pytest.mark.django_db
def test_display_tokens_are_rate_limited_per_user(student, owner, settings):
    from workspaces.models import Image

    settings.LATTICE_DISPLAY_TOKENS_PER_MINUTE = 3
    display = Image.objects.create(slug="desk", reference="lattice/desktop:latest", kind="display")
    ws = Workspace.objects.create(
        owner=owner,
        display=display,
        state="running",
        engine_state=endpoint_state(),
    )
    client = redis_client()
    for key in client.scan_iter("lattice:display-requests:*"):  # user ids repeat from test to test
        client.delete(key)
    url = f"/api/workspaces/{ws.pk}/display-token/"
    assert [student.post(url).status_code for _ in range(3)] == [200, 200, 200]
    refusal = student.post(url)
    assert refusal.status_code == 429
    assert refusal.json()["detail"] == (
        "You asked to open a screen more than 3 times in a minute; wait a minute and try again."
    )
