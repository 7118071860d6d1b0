"""The live-events websocket, through the real ASGI app and the Redis channel layer."""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from portal.asgi import application
from workspaces.lib.events import publish

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture(autouse=True)
async def _close_the_sync_thread_connection():
    """Async code reaches the database from asgiref's one shared sync thread,
    whose connection would outlive the test and keep PostgreSQL from dropping
    the test database at the end of the run."""
    yield
    await sync_to_async(connections.close_all)()


def test_the_channel_layer_is_redis():
    from channels.layers import get_channel_layer

    assert type(get_channel_layer()).__name__ == "RedisChannelLayer"
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] == settings.REDIS_URL


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _connect(user=None, origin=ORIGIN):
    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await sync_to_async(_session_cookie)(user)))
    communicator = WebsocketCommunicator(application, "/ws/events/", headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def test_anonymous_connection_is_accepted_then_closed_with_4401():
    # Accepted first: a close before accepting is an HTTP 403 on the wire, and
    # browsers then report only 1006, which events.js would retry forever.
    communicator, connected, _ = await _connect()
    assert connected
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def test_foreign_origin_is_refused_at_the_handshake(owner):
    communicator, connected, _ = await _connect(owner, origin=(b"origin", b"https://evil.example"))
    assert not connected
    await communicator.disconnect()


def _ws_url(live_server_url: str) -> str:
    return live_server_url.replace("http://", "ws://") + "/ws/events/"


def test_over_the_wire_an_anonymous_socket_gets_close_code_4401(live_server_url):
    """What a browser sees from uvicorn: an open socket, then a close frame with 4401."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with (
        connect(_ws_url(live_server_url), origin=live_server_url, open_timeout=10) as socket,
        pytest.raises(ConnectionClosed) as closed,
    ):
        socket.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


def test_over_the_wire_a_foreign_origin_is_refused_before_the_socket_opens(live_server_url, owner):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    cookie = _session_cookie(owner).decode()
    with pytest.raises(InvalidStatus) as refused:
        connect(
            _ws_url(live_server_url),
            origin="https://evil.example",
            additional_headers={"Cookie": cookie},
            open_timeout=10,
        )
    assert refused.value.response.status_code == 403


def test_over_the_wire_an_idle_socket_stays_open_and_still_gets_events(live_server_url, owner):
    """redis-py 8 reads with a 5 s socket timeout by default, which broke the
    channel layer's blocking receive and closed every idle socket after 5 s."""
    from websockets.sync.client import connect

    cookie = _session_cookie(owner).decode()
    with connect(
        _ws_url(live_server_url),
        origin=live_server_url,
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    ) as socket:
        time.sleep(7)
        publish(owner.pk, {"type": "job", "progress": 70, "message": "after a quiet while"})
        event = json.loads(socket.recv(timeout=10))
    assert event == {"type": "job", "progress": 70, "message": "after a quiet while"}


async def test_events_reach_every_tab_of_the_user_and_nobody_else(owner, stranger):
    tab1, ok1, _ = await _connect(owner)
    tab2, ok2, _ = await _connect(owner)
    other, ok3, _ = await _connect(stranger)
    assert ok1 and ok2 and ok3
    await sync_to_async(publish)(owner.pk, {"type": "job", "progress": 40, "message": "halfway"})
    for tab in (tab1, tab2):
        assert await tab.receive_json_from(timeout=5) == {"type": "job", "progress": 40, "message": "halfway"}
    assert await other.receive_nothing(timeout=0.5)
    for communicator in (tab1, tab2, other):
        await communicator.disconnect()


async def test_ping_is_answered(owner):
    tab, connected, _ = await _connect(owner)
    assert connected
    await tab.send_json_to({"type": "ping"})
    assert await tab.receive_json_from(timeout=5) == {"type": "pong"}
    await tab.disconnect()


async def test_a_task_in_a_real_celery_worker_reports_progress_to_the_socket(owner, celery_worker_process):
    from rest_framework.test import APIClient

    from workspaces.models import Job

    tab, connected, _ = await _connect(owner)
    assert connected

    def queue() -> int:
        client = APIClient()
        client.force_authenticate(owner)
        response = client.post("/api/jobs/diagnostics/")
        assert response.status_code == 202
        return response.json()["id"]

    job_id = await sync_to_async(queue)()
    events = []
    while not events or events[-1]["state"] not in ("done", "failed"):
        events.append(await tab.receive_json_from(timeout=20))
    await tab.disconnect()
    assert all(e["id"] == job_id for e in events)
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 100
    assert any("Checking the Docker engine" in e["message"] for e in events)
    assert events[-1]["state"] == "done", events[-1]
    job = await sync_to_async(Job.objects.get)(pk=job_id)
    assert job.state == "done" and job.finished is not None
    await asyncio.sleep(0)


async def test_a_redis_restarted_empty_makes_the_socket_close_so_the_page_resyncs(owner):
    """Its groups went with Redis: the next ping closes the socket (1012), and events.js reconnects."""
    from workspaces.consumers import CLOSE_RESYNC, EPOCH_KEY
    from workspaces.lib.redis import redis_client

    tab, connected, _ = await _connect(owner)
    assert connected
    await tab.send_json_to({"type": "ping"})
    assert await tab.receive_json_from(timeout=5) == {"type": "pong"}
    await sync_to_async(redis_client().delete)(EPOCH_KEY)  # what a restart without persistence does
    await tab.send_json_to({"type": "ping"})
    assert await tab.receive_output(timeout=5) == {"type": "websocket.close", "code": CLOSE_RESYNC}
    await tab.disconnect()
    # A new socket hears events again.
    again, connected, _ = await _connect(owner)
    assert connected
    await sync_to_async(publish)(owner.pk, {"type": "workspace", "id": 1, "state": "running"})
    assert (await again.receive_json_from(timeout=5))["state"] == "running"
    await again.disconnect()


async def test_with_redis_away_the_socket_is_closed_for_a_retry_not_crashed(owner, settings, monkeypatch):
    import redis.exceptions

    from workspaces import consumers

    async def away():
        raise redis.exceptions.ConnectionError("Error 111 connecting: Connection refused.")

    monkeypatch.setattr(consumers, "_redis_epoch", away)
    tab, connected, _ = await _connect(owner)
    assert connected
    assert await tab.receive_output(timeout=5) == {"type": "websocket.close", "code": consumers.CLOSE_RESYNC}
    await tab.disconnect()
