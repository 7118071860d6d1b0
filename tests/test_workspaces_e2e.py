"""Workspaces end to end: the real Docker engine, a real Celery worker, Redis and
the display proxy (websockify), driven through the public API like a browser."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import requests
from django.conf import settings
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tests.conftest import PASSWORD, TEST_ORIGIN
from tests.support.e2e import (
    containers_of,
    data_volumes,
    engine_id,
    inspect,
    launch,
    networks_of,
    never_ready_image,
    pointer,
    running,
    sh,
    wait_for_state,
    wait_for_window,
    wait_until_gone,
)
from tests.support.services import ARTIFACTS
from workspaces.display import tokens as display_tokens
from workspaces.display.rfb import RFBClient, RFBError
from workspaces.lib.redis import redis_client
from workspaces.models import Image, Workspace
from workspaces.services import lifecycle

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]
# How a refused display connection looks to a client: the proxy closes it
# during the handshake, or answers with an error status.
REFUSED = (InvalidHandshake, RFBError, ConnectionError, OSError)


def token(client, ws_id: int, mode: str = "control") -> dict:
    response = client.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": mode}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def test_desktop_and_ide_reach_running_and_draw_through_the_proxy(engine, student):
    ws_id = running(student)
    body = student.get(f"/api/workspaces/{ws_id}/").json()
    assert body["state"] == "running" and body["progress"] == 100
    assert sorted(c["name"] for c in body["containers"]) == ["display", "ide"]
    assert all(c["state"] == "running" for c in body["containers"])
    grant = token(student, ws_id)
    with RFBClient(grant["url"], grant["password"], origin=TEST_ORIGIN) as rfb:
        assert (rfb.width, rfb.height) == (1280, 800)
        frame = rfb.frame()
    assert not frame.is_blank()
    assert frame.distinct_colours() > 3
    wait_for_window(engine, ws_id, "Geany")


def test_containers_share_only_data_and_it_survives_everything(engine, student, owner):
    ws_id = running(student)
    sh(engine, ws_id, "ide", "echo private > /home/user/only-in-ide.txt")
    digest = sh(
        engine, ws_id, "ide", "head -c 1048576 /dev/urandom > /data/shared.bin && sha256sum /data/shared.bin"
    )
    digest = digest.split()[0]
    # Outside /data each container has its own filesystem ...
    code, _ = engine.exec(engine_id(ws_id), "display", ["test", "-e", "/home/user/only-in-ide.txt"])
    assert code != 0
    # ... and /data is the same volume in both.
    assert sh(engine, ws_id, "display", "sha256sum /data/shared.bin").split()[0] == digest

    assert student.post(f"/api/workspaces/{ws_id}/stop/").status_code == 202
    assert wait_for_state(ws_id, {"stopped"}).state == "stopped"
    assert containers_of(engine_id(ws_id), all_states=False) == []
    assert student.post(f"/api/workspaces/{ws_id}/start/").status_code == 202
    assert wait_for_state(ws_id, {"running", "failed"}).state == "running"
    assert sh(engine, ws_id, "ide", "cat /home/user/only-in-ide.txt").strip() == "private"
    assert sh(engine, ws_id, "display", "sha256sum /data/shared.bin").split()[0] == digest

    volumes_before = data_volumes()
    eid = engine_id(ws_id)
    assert student.delete(f"/api/workspaces/{ws_id}/").status_code == 202
    wait_until_gone(ws_id)
    assert containers_of(eid) == [] and networks_of(eid) == []
    assert data_volumes() == volumes_before  # the data volume is never deleted

    again = running(student)
    assert sh(engine, again, "ide", "sha256sum /data/shared.bin").split()[0] == digest
    code, _ = engine.exec(engine_id(again), "ide", ["test", "-e", "/home/user/only-in-ide.txt"])
    assert code != 0  # a new workspace has fresh containers


def test_containers_are_hardened(engine, student):
    ws_id = running(student)
    names = containers_of(engine_id(ws_id))
    assert len(names) == 2
    for name in names:
        info = inspect(name)
        host = info["HostConfig"]
        is_display = name.endswith("-display")
        assert info["Config"]["User"] == "1000:1000", name
        assert host["CapDrop"] == ["ALL"], name
        assert "no-new-privileges" in host["SecurityOpt"], name
        assert host["Privileged"] is False
        assert host["Memory"] > 0 and host["NanoCpus"] > 0 and host["PidsLimit"] > 0
        assert host["ShmSize"] >= 64 * 1024 * 1024
        assert not host.get("PortBindings"), "nothing is published on the host"
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        volumes = {"/data", "/tmp/.X11-unix"}
        # The display alone gets its socket folder: apps cannot even see the VNC socket.
        assert set(mounts) == (volumes | {"/run/lattice-vnc"} if is_display else volumes), mounts
        assert all(mounts[v]["Type"] == "volume" for v in volumes)
        assert "docker.sock" not in str(info["Mounts"]) + str(host.get("Binds"))
        networks = list(info["NetworkSettings"]["Networks"])
        expected = ["none"] if is_display else [f"{settings.LATTICE_ENGINE_PREFIX}-ws{engine_id(ws_id)}"]
        assert networks == expected, networks
        # The VNC passwords are on the display only, and never in an app.
        env = " ".join(info["Config"]["Env"])
        assert ("LATTICE_VNC_PASSWORD" in env) == is_display


def test_display_tokens_are_single_use_short_lived_and_revoked_on_stop(engine, student, settings):
    ws_id = running(student, apps=())
    grant = token(student, ws_id)
    with RFBClient(grant["url"], grant["password"], origin=TEST_ORIGIN):
        pass
    with pytest.raises(REFUSED):
        RFBClient(grant["url"], grant["password"], origin=TEST_ORIGIN, timeout=5)

    settings.LATTICE_DISPLAY_TOKEN_TTL = 1
    expired = token(student, ws_id)
    time.sleep(1.5)
    with pytest.raises(REFUSED):
        RFBClient(expired["url"], expired["password"], origin=TEST_ORIGIN, timeout=5)

    # A page of another site is refused before its token is looked at, so
    # the token still works for the portal's own page.
    settings.LATTICE_DISPLAY_TOKEN_TTL = 60
    foreign = token(student, ws_id)
    with pytest.raises(InvalidStatus):
        RFBClient(foreign["url"], foreign["password"], origin="https://evil.example", timeout=5)
    RFBClient(foreign["url"], foreign["password"], origin=TEST_ORIGIN).close()

    # An open connection ends when the workspace stops, and unused tokens die:
    # tried once the workspace runs again, so only the revocation can refuse it.
    unused = token(student, ws_id)
    live = RFBClient(token(student, ws_id)["url"], grant["password"], origin=TEST_ORIGIN)
    assert student.post(f"/api/workspaces/{ws_id}/stop/").status_code == 202
    wait_for_state(ws_id, {"stopped"})
    with pytest.raises(Exception):  # noqa: B017 - closed by the server, any way it says so
        live.frame()
    assert student.post(f"/api/workspaces/{ws_id}/start/").status_code == 202
    wait_for_state(ws_id, {"running"})
    with pytest.raises(REFUSED):
        RFBClient(unused["url"], unused["password"], origin=TEST_ORIGIN, timeout=5)


def test_a_revoked_scope_ends_open_connections_while_the_display_runs(engine, student):
    ws_id = running(student, apps=())
    ws = Workspace.objects.get(pk=ws_id)
    proxy = settings.LATTICE_DISPLAY_PROXY_URL
    demo_token, password = lifecycle.issue_display_token(ws, "view", scopes=("demo:99",))
    own = token(student, ws_id)
    demo = RFBClient(f"{proxy}?token={demo_token}", password, origin=TEST_ORIGIN)
    mine = RFBClient(own["url"], own["password"], origin=TEST_ORIGIN)
    demo.frame()
    display_tokens.revoke_scope(redis_client(), "demo:99")
    deadline = time.monotonic() + 5
    with pytest.raises(Exception):  # noqa: B017 - closed by the proxy, any way it says so
        while time.monotonic() < deadline:
            demo.frame()
            time.sleep(0.1)
    # The owner's own connection, of another scope, goes on.
    assert not mine.frame().is_blank()
    mine.close()
    assert Workspace.objects.get(pk=ws_id).state == "running"


def test_delete_ends_open_connections_and_unused_tokens(engine, student):
    ws_id = running(student, apps=())
    unused = token(student, ws_id)
    live = RFBClient(token(student, ws_id)["url"], unused["password"], origin=TEST_ORIGIN)
    assert student.delete(f"/api/workspaces/{ws_id}/").status_code == 202
    assert display_tokens.consume(redis_client(), unused["url"].split("token=")[1]) is None
    with pytest.raises(Exception):  # noqa: B017 - closed by the server, any way it says so
        for _ in range(50):
            live.frame()
            time.sleep(0.1)
    wait_until_gone(ws_id)


def test_view_mode_input_never_reaches_the_desktop(engine, student):
    ws_id = running(student, apps=())
    control = token(student, ws_id, "control")
    with RFBClient(control["url"], control["password"], origin=TEST_ORIGIN) as rfb:
        rfb.pointer(100, 120)
        rfb.frame()  # a round trip: the pointer event has been handled
    assert pointer(engine, ws_id) == (100, 120)

    view = token(student, ws_id, "view")
    assert view["password"] != control["password"]
    with RFBClient(view["url"], view["password"], origin=TEST_ORIGIN) as rfb:
        assert not rfb.frame().is_blank()  # the viewer sees the desktop ...
        rfb.pointer(600, 500)
        rfb.key(0x61, True)
        rfb.key(0x61, False)
        rfb.frame()
    assert pointer(engine, ws_id) == (100, 120)  # ... and moves nothing

    # Even a viewer who learnt the control password (a teacher who once took
    # control) moves nothing with a view token: the proxy drops the input.
    view = token(student, ws_id, "view")
    with RFBClient(view["url"], control["password"], origin=TEST_ORIGIN) as rfb:
        assert not rfb.frame().is_blank()
        rfb.pointer(700, 300)
        rfb.frame()
    assert pointer(engine, ws_id) == (100, 120)
    # ... while the same moves through a control token do arrive (the test can fail).
    control = token(student, ws_id, "control")
    with RFBClient(control["url"], control["password"], origin=TEST_ORIGIN) as rfb:
        rfb.pointer(700, 300)
        rfb.frame()
    assert pointer(engine, ws_id) == (700, 300)


def test_double_start_and_stop_during_start_leave_one_consistent_workspace(engine, student):
    ws_id = running(student, apps=())
    student.post(f"/api/workspaces/{ws_id}/stop/")
    wait_for_state(ws_id, {"stopped"})
    answers = []

    def start():
        answers.append(student.post(f"/api/workspaces/{ws_id}/start/").status_code)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202, 409]
    assert wait_for_state(ws_id, {"running", "failed"}).state == "running"
    assert len(containers_of(engine_id(ws_id), all_states=False)) == 1

    # Stop while it starts: it ends stopped, with nothing left running.
    fresh = launch(student)
    wait_for_state(fresh, {"starting"}, timeout=20)
    assert student.post(f"/api/workspaces/{fresh}/stop/").status_code == 202
    assert wait_for_state(fresh, {"stopped"}).state == "stopped"
    assert containers_of(engine_id(fresh), all_states=False) == []
    time.sleep(1)  # nothing changes its mind later
    assert Workspace.objects.get(pk=fresh).state == "stopped"
    assert containers_of(engine_id(fresh), all_states=False) == []

    # Delete while it starts: it ends gone, with nothing left at all.
    doomed = launch(student)
    eid = engine_id(doomed)
    wait_for_state(doomed, {"starting"}, timeout=20)
    assert student.delete(f"/api/workspaces/{doomed}/").status_code == 202
    wait_until_gone(doomed)
    assert containers_of(eid) == [] and networks_of(eid) == []


def test_a_display_that_never_gets_ready_fails_with_a_reason_and_leaves_nothing(engine, student, owner):
    Image.objects.create(slug="mute", reference=never_ready_image(), kind="display", title="Mute")
    response = student.post("/api/workspaces/", {"display": "mute", "apps": ["ide"]}, format="json")
    ws = wait_for_state(response.json()["id"], {"failed", "running"}, timeout=120)
    assert ws.state == "failed"
    assert "not ready" in ws.message.lower() or "did not" in ws.message.lower(), ws.message
    assert containers_of(ws.engine_id) == [] and networks_of(ws.engine_id) == []


def test_display_tokens_never_reach_a_log(engine, owner, celery_worker_process, live_server_url, caplog):
    """No token in any log of the run: the web server that issues them (asked over
    real HTTP, as a browser does), the proxy that consumes them, the worker that
    stops the workspace, nor this process."""
    caplog.set_level(logging.DEBUG)
    # The logs are the whole session's: only what is written from now on counts.
    logs = ["display-proxy.log", "celery-worker.log", "uvicorn.log"]
    assert {path.name for path in ARTIFACTS.glob("*.log")} >= set(logs)
    offsets = {name: (ARTIFACTS / name).stat().st_size for name in logs}

    def written_since() -> dict[str, str]:
        text = {}
        for name, offset in offsets.items():
            with (ARTIFACTS / name).open("rb") as log:
                log.seek(offset)
                text[name] = log.read().decode(errors="replace")
        return text

    web = requests.Session()
    answer = web.post(f"{live_server_url}/api/auth/token/", json={"username": "owner", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    web.headers["Authorization"] = f"Token {answer.json()['token']}"

    def over_http(method: str, path: str, **body) -> dict:
        response = web.request(method, f"{live_server_url}{path}", json=body or None, timeout=30)
        assert response.status_code in (200, 202), (path, response.status_code, response.text)
        return response.json()

    launched = over_http("POST", "/api/workspaces/", display="desktop", apps=[])
    ws = wait_for_state(launched["id"], {"running", "failed"})
    assert ws.state == "running", ws.message
    ws_id = ws.pk
    grants = [over_http("POST", f"/api/workspaces/{ws_id}/display-token/", mode="control") for _ in range(3)]
    used, refused = grants[:2]  # and a third, never used
    with RFBClient(used["url"], used["password"], origin=TEST_ORIGIN):
        pass
    with pytest.raises(InvalidStatus):
        RFBClient(refused["url"], refused["password"], origin="https://evil.example", timeout=5)
    with pytest.raises(REFUSED):
        RFBClient(used["url"], used["password"], origin=TEST_ORIGIN, timeout=5)  # a second use, refused
    # Stopped through the web server and the worker; the unused token is revoked on the way.
    over_http("POST", f"/api/workspaces/{ws_id}/stop/")
    wait_for_state(ws_id, {"stopped"})

    # Each process has written its part: each log shows it has been read up to here.
    deadline = time.monotonic() + 10
    while True:
        logs_now = written_since()
        seen = (
            "connecting to unix socket" in logs_now["display-proxy.log"]  # the proxy logged the connection
            and f"/api/workspaces/{ws_id}/stop/" in logs_now["uvicorn.log"]
            and "stop_workspace" in logs_now["celery-worker.log"]
        )
        if seen or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen, {name: text[-2000:] for name, text in logs_now.items()}
    assert "/display-token/" in logs_now["uvicorn.log"]  # the tokens came from the web server
    # This process's own records: the test's websocket client logs the URL it opens
    # (a browser's part, not the portal's), so the websockets library's own are left out.
    logs_now["pytest"] = "\n".join(
        record.getMessage() for record in caplog.records if not record.name.startswith("websockets")
    )
    for grant in grants:
        secret = grant["url"].split("token=")[1]
        assert len(secret) >= 32
        written = [name for name, text in logs_now.items() if secret in text]
        assert not written, f"a token was written to {written}"
