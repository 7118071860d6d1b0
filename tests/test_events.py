"""The live-events websocket, through the real ASGI app and the Redis channel layer."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from portal.asgi import application
from workspaces.events import publish

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def test_the_channel_layer_is_redis():
    from channels.layers import get_channel_layer

    assert type(get_channel_layer()).__name__ == "RedisChannelLayer"
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] == [settings.REDIS_URL]


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


async def test_anonymous_connection_is_refused():
    communicator, connected, code = await _connect()
    assert not connected
    assert code == 4401
    await communicator.disconnect()


async def test_foreign_origin_is_refused(owner):
    communicator, connected, _ = await _connect(owner, origin=(b"origin", b"https://evil.example"))
    assert not connected
    await communicator.disconnect()


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
