"""A class of five on the real engine: broadcast, starter files, the grid, demo,
control, collect and stop, through the API, the worker and the display proxy."""

from __future__ import annotations

import hashlib
import io
import time

import pytest
from PIL import Image as Picture
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed

from tests.conftest import TEST_ORIGIN
from tests.support.e2e import pointer, sh, wait_for_job, wait_for_state
from workspaces.display.rfb import RFBClient, RFBError
from workspaces.display.sockets import DisplayTarget
from workspaces.models import Classroom, Seat, Workspace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]
CLASS_SIZE = 5


def poke(grant: dict, x: int, y: int) -> None:
    """Connect as a browser would and try to move the pointer."""
    with RFBClient(grant["url"], grant["password"], origin=TEST_ORIGIN) as rfb:
        rfb.pointer(x, y)
        rfb.key(0x61, True)
        rfb.key(0x61, False)
        rfb.frame()


def closes_soon(rfb: RFBClient, within: float = 5) -> bool:
    """Does the proxy close this open connection within a few seconds?"""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            rfb.request_frame()
            rfb.read_update()
            time.sleep(0.2)
    except ConnectionClosed:
        return True
    return False


def assert_rotated(workspace_id: int, old: str, field: str = "vnc_password") -> None:
    """The workspace's VNC password changed from ``old``, and ``old`` no longer opens its display."""
    deadline = time.monotonic() + 20
    while getattr(Workspace.objects.get(pk=workspace_id), field) == old:
        assert time.monotonic() < deadline, "the VNC passwords did not rotate"
        time.sleep(0.2)
    endpoint = Workspace.objects.get(pk=workspace_id).engine_state["endpoint"]
    with pytest.raises(RFBError, match=r"(?i)authentication fail"):
        RFBClient.unix(DisplayTarget.from_endpoint(endpoint), old, timeout=10)


def as_student(student) -> APIClient:
    client = APIClient()
    client.force_authenticate(student)
    return client


def test_a_class_of_five(engine, api_client, make_user):
    teacher = make_user("ms-lovelace", role="teacher")
    students = [make_user(f"pupil{n}") for n in range(1, CLASS_SIZE + 1)]
    tclient = api_client
    tclient.force_authenticate(teacher)
    room = tclient.post(
        "/api/classrooms/",
        {"name": "Analytical Engines", "students": [s.username for s in students]},
        format="json",
    ).json()
    classroom = Classroom.objects.get(pk=room["id"])
    folder = classroom.folder
    for student in students:  # invited: each accepts, and only then is in the class
        assert as_student(student).post(f"/api/classrooms/{room['id']}/accept/").status_code == 200
    assert classroom.students.count() == CLASS_SIZE

    # The teacher's own workspace: starter files in /data, and later the demo.
    mine = tclient.post("/api/workspaces/", {"display": "desktop", "apps": []}, format="json").json()["id"]
    assert wait_for_state(mine, {"running", "failed"}).state == "running"
    sh(
        engine,
        mine,
        "display",
        "mkdir -p /data/lessons/week1/src /data/seed && "
        "echo 'print(1)' > /data/lessons/week1/main.py && echo notes > /data/lessons/week1/src/notes.txt && "
        "echo 'my own work' > /data/seed/main.py",
    )
    # pupil1 already has a main.py of their own in the class folder.
    engine.copy_data(teacher.pk, "seed", students[0].pk, folder)

    started = time.monotonic()
    sent = tclient.post(
        f"/api/classrooms/{room['id']}/broadcasts/",
        {"display": "desktop", "apps": [], "files": "lessons/week1"},
        format="json",
    )
    assert sent.status_code == 202
    broadcast_id = sent.json()["id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = {
            s["username"]: s["state"]
            for s in tclient.get(f"/api/broadcasts/{broadcast_id}/").json()["students"]
        }
        if all(state in ("running", "failed") for state in states.values()):
            break
        time.sleep(0.5)
    assert set(states.values()) == {"running"}, tclient.get(f"/api/broadcasts/{broadcast_id}/").json()
    print(f"broadcast to {CLASS_SIZE}: {time.monotonic() - started:.1f} s")
    seats = {
        s.student.username: s
        for s in Seat.objects.filter(broadcast_id=broadcast_id).select_related("student")
    }

    # Starter files landed; pupil1's own main.py was kept, the teacher's beside it.
    first = seats["pupil1"].workspace_id
    assert sh(engine, first, "display", f"cat /data/{folder}/main.py").strip() == "my own work"
    assert sh(engine, first, "display", f"cat /data/{folder}/main.py.1").strip() == "print(1)"
    listing = sh(engine, first, "display", f"cd /data/{folder} && find . -type f | sort")
    assert seats["pupil1"].files == {"copied": 1, "beside": 1, "same": 0}, listing
    second = seats["pupil2"].workspace_id
    assert sh(engine, second, "display", f"cat /data/{folder}/main.py").strip() == "print(1)"
    assert sh(engine, second, "display", f"cat /data/{folder}/src/notes.txt").strip() == "notes"

    # The grid: a real, small picture of each running screen.
    for username in seats:
        response = tclient.get(f"/api/classrooms/{room['id']}/students/{username}/thumbnail.png")
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        picture = Picture.open(io.BytesIO(response.content))
        assert picture.size == (320, 200)
        assert len(picture.getcolors(maxcolors=100000) or []) > 3, "a blank thumbnail"

    # The large view, view-only: the teacher sees frames and moves nothing.
    view = tclient.post(
        f"/api/classrooms/{room['id']}/students/pupil2/display-token/", {"mode": "view"}, format="json"
    ).json()
    with RFBClient(view["url"], view["password"], origin=TEST_ORIGIN) as rfb:
        assert not rfb.frame().is_blank()
    before = pointer(engine, second)
    poke(
        tclient.post(
            f"/api/classrooms/{room['id']}/students/pupil2/display-token/", {"mode": "view"}, format="json"
        ).json(),
        300,
        333,
    )
    assert pointer(engine, second) == before

    # Taking control works, and the student is told while it lasts.
    control = tclient.post(
        f"/api/classrooms/{room['id']}/students/pupil2/display-token/", {"mode": "control"}, format="json"
    ).json()
    poke(control, 222, 111)
    assert pointer(engine, second) == (222, 111)
    from workspaces.services import teaching

    assert teaching.controlled_by(Workspace.objects.get(pk=second)) == "ms-lovelace"
    # A second tab in control, still open: releasing the first leaves it and the notice.
    student_url = f"/api/classrooms/{room['id']}/students/pupil2"
    tab = tclient.post(
        f"{student_url}/display-token/?session=tab-two", {"mode": "control"}, format="json"
    ).json()
    with RFBClient(tab["url"], tab["password"], origin=TEST_ORIGIN) as tab_two:
        assert tclient.post(f"{student_url}/release/").status_code == 204
        assert teaching.controlled_by(Workspace.objects.get(pk=second)) == "ms-lovelace"
        assert not closes_soon(tab_two, within=2), "another session's release closed this tab"
        assert tclient.post(f"{student_url}/release/?session=tab-two").status_code == 204
        assert closes_soon(tab_two), "a released control session's connection stays open"
    assert teaching.controlled_by(Workspace.objects.get(pk=second)) is None
    # The control password the teacher's pages held opens nothing now: the worker gave the
    # running display new ones; a new token carries them.
    assert_rotated(second, tab["password"])
    poke(tclient.post(f"{student_url}/display-token/", {"mode": "control"}, format="json").json(), 223, 112)
    assert pointer(engine, second) == (223, 112)
    tclient.post(f"{student_url}/release/")

    # Demo: every student sees the teacher's screen and cannot touch it.
    assert (
        tclient.post(f"/api/classrooms/{room['id']}/demo/", {"workspace": mine}, format="json").status_code
        == 202
    )
    sh(engine, mine, "display", "DISPLAY=:0 XAUTHORITY=/tmp/.X11-unix/Xauthority xdotool mousemove 50 60")
    for student in students[:2]:
        api_client.force_authenticate(student)
        grant = api_client.post(f"/api/classrooms/{room['id']}/demo/token/").json()
        assert grant["mode"] == "view"
        with RFBClient(grant["url"], grant["password"], origin=TEST_ORIGIN) as rfb:
            assert not rfb.frame().is_blank()
        poke(api_client.post(f"/api/classrooms/{room['id']}/demo/token/").json(), 700, 500)
    assert pointer(engine, mine) == (50, 60)
    # Ending the demo closes the students' open connections, never the teacher's own.
    grant = api_client.post(f"/api/classrooms/{room['id']}/demo/token/").json()
    api_client.force_authenticate(teacher)
    own = tclient.post(f"/api/workspaces/{mine}/display-token/", {"mode": "control"}, format="json").json()
    with (
        RFBClient(grant["url"], grant["password"], origin=TEST_ORIGIN) as watching,
        RFBClient(own["url"], own["password"], origin=TEST_ORIGIN) as teachers_own,
    ):
        assert not watching.frame().is_blank()
        assert tclient.delete(f"/api/classrooms/{room['id']}/demo/").status_code == 204
        assert closes_soon(watching), "a student still sees the demo after it ended"
        assert not closes_soon(teachers_own, within=2)
    # The view password the whole class held opens the teacher's screen no more.
    assert_rotated(mine, grant["password"], field="vnc_view_password")
    api_client.force_authenticate(students[0])
    assert api_client.post(f"/api/classrooms/{room['id']}/demo/token/").status_code == 409
    api_client.force_authenticate(teacher)

    # Collect: every student's class folder, byte for byte, into the teacher's /data.
    sums = {}
    for username, seat in seats.items():
        sums[username] = sh(
            engine,
            seat.workspace_id,
            "display",
            f"head -c 200000 /dev/urandom > /data/{folder}/work.bin && sha256sum /data/{folder}/work.bin",
        ).split()[0]
    job = wait_for_job(tclient.post(f"/api/classrooms/{room['id']}/collect/").json()["id"], timeout=120)
    assert job.state == "done", job.message
    assert all(outcome["ok"] for outcome in job.result.values()), job.result
    for username, digest in sums.items():
        collected = sh(
            engine, mine, "display", f"sha256sum /data/collected/{folder}/{username}/work.bin"
        ).split()[0]
        assert collected == digest
    assert hashlib.sha256(b"").hexdigest() not in sums.values()

    # End: stop the whole class at once.
    assert tclient.post(f"/api/classrooms/{room['id']}/stop/").json() == {"stopping": CLASS_SIZE}
    for seat in seats.values():
        assert wait_for_state(seat.workspace_id, {"stopped"}).state == "stopped"
    # The grid, reloaded, says so too; and a stopped screen has no thumbnail to ask for.
    shown = tclient.get(f"/api/broadcasts/{broadcast_id}/").json()["students"]
    assert {s["state"] for s in shown} == {"stopped"}
    assert tclient.get(f"/api/classrooms/{room['id']}/students/pupil1/thumbnail.png").status_code == 409
