"""Classrooms without containers: membership, permissions, validation."""

from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from workspaces import tasks
from workspaces.display import tokens as display_tokens
from workspaces.lib.redis import redis_client
from workspaces.models import Broadcast, Classroom, Image, Seat, Workspace
from workspaces.services import classrooms, teaching

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(db):
    Image.objects.create(slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop")
    Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE")


@pytest.fixture
def other_teacher(make_user):
    return make_user("other-teacher", role="teacher")


@pytest.fixture
def classroom(teacher, owner, teammate):
    room = Classroom.objects.create(name="Python 101")
    room.teachers.add(teacher)
    room.students.add(owner, teammate)
    return room


def as_user(api_client, user):
    api_client.force_authenticate(user)
    return api_client


def test_teacher_creates_a_classroom_inviting_students(api_client, teacher, owner, teammate):
    response = as_user(api_client, teacher).post(
        "/api/classrooms/", {"name": "Maths", "students": ["Owner", "teammate"]}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    # Invited, not members: nobody joins a class without saying yes.
    assert body["students"] == [] and body["invited"] == ["owner", "teammate"]
    assert body["teachers"] == ["teach"]
    assert len(body["join_code"]) == 8
    assert [c["name"] for c in api_client.get("/api/classrooms/").json()] == ["Maths"]


def test_unknown_or_non_student_usernames_are_400(api_client, teacher, other_teacher):
    client = as_user(api_client, teacher)
    response = client.post("/api/classrooms/", {"name": "X", "students": ["ghost", "nobody"]}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "No such user: ghost, nobody."
    response = client.post("/api/classrooms/", {"name": "X", "students": ["other-teacher"]}, format="json")
    assert "Not a student account: other-teacher" in response.json()["detail"]
    assert not Classroom.objects.exists()


def test_students_cannot_create_classrooms(api_client, owner):
    assert (
        as_user(api_client, owner).post("/api/classrooms/", {"name": "X"}, format="json").status_code == 403
    )


def test_students_added_from_a_csv(api_client, teacher, classroom, make_user):
    make_user("carol")
    make_user("dave")
    csv = "username,name\ncarol,Carol C\ndave,Dave D\n"
    response = as_user(api_client, teacher).post(
        f"/api/classrooms/{classroom.pk}/students/", {"csv": csv}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["invited"] == ["carol", "dave"]
    assert response.json()["students"] == ["owner", "teammate"]


def test_students_join_with_the_code_and_see_their_classrooms(api_client, classroom, stranger):
    client = as_user(api_client, stranger)
    bad = client.post("/api/classrooms/join/", {"code": "NOPE0000"}, format="json")
    assert bad.status_code == 400 and "does not match" in bad.json()["detail"]
    ok = client.post("/api/classrooms/join/", {"code": classroom.join_code.lower()}, format="json")
    assert ok.status_code == 200
    assert client.get("/api/classrooms/").json() == [
        {"id": classroom.pk, "name": "Python 101", "teachers": ["teach"]}
    ]


def test_co_teachers_share_the_classroom(api_client, teacher, other_teacher, classroom):
    response = as_user(api_client, teacher).post(
        f"/api/classrooms/{classroom.pk}/teachers/", {"username": "other-teacher"}, format="json"
    )
    assert response.status_code == 200
    assert as_user(api_client, other_teacher).get(f"/api/classrooms/{classroom.pk}/").status_code == 200


ENDPOINT = {
    "host": "10.0.0.2",
    "port": 5900,
    "path": "/run/lattice/test.sock",
    "container_id": "c0ffee",
    "server_pid": 4242,
}


@pytest.fixture
def watched(classroom, teacher, owner, catalog):
    """owner's running broadcast workspace, and a demo of the teacher's own running workspace."""
    desktop = Image.objects.get(slug="desktop")
    ws = Workspace.objects.create(
        owner=owner, display=desktop, state="running", engine_state={"endpoint": ENDPOINT}
    )
    sent = Broadcast.objects.create(classroom=classroom, teacher=teacher, display=desktop)
    seat = Seat.objects.create(broadcast=sent, student=owner, workspace=ws, state="failed")
    shown = Workspace.objects.create(
        owner=teacher, display=desktop, state="running", engine_state={"endpoint": ENDPOINT}
    )
    teaching.start_demo(classroom, shown)
    yield SimpleNamespace(workspace=ws, broadcast=sent, seat=seat, demo=shown)
    teaching.end_demo(classroom)
    redis_client().delete(f"{teaching.CONTROL_KEY}{ws.pk}")


def test_a_teacher_of_another_class_gets_404_everywhere(
    api_client, client, other_teacher, classroom, watched
):
    # Everything exists (a seat, a running screen, a demo), so only the permission check can answer 404.
    theirs = Workspace.objects.create(owner=other_teacher, display=watched.demo.display, state="running")
    api = as_user(api_client, other_teacher)
    base = f"/api/classrooms/{classroom.pk}"
    student = f"{base}/students/owner"
    assert api.get(f"{base}/").status_code == 404
    assert api.post(f"{base}/students/", {"students": ["stranger"]}, format="json").status_code == 404
    assert api.post(f"{base}/teachers/", {"username": "other-teacher"}, format="json").status_code == 404
    assert api.post(f"{base}/broadcasts/", {"display": "desktop"}, format="json").status_code == 404
    assert api.post(f"{base}/stop/").status_code == 404
    assert api.post(f"{base}/collect/").status_code == 404
    assert api.post(f"{base}/demo/", {"workspace": theirs.pk}, format="json").status_code == 404
    assert api.delete(f"{base}/demo/").status_code == 404
    assert api.post(f"{student}/display-token/", {"mode": "view"}, format="json").status_code == 404
    assert api.post(f"{student}/display-token/", {"mode": "control"}, format="json").status_code == 404
    assert api.get(f"{student}/thumbnail.png").status_code == 404
    teaching.start_control(classroom.teachers.get(), watched.workspace)
    assert api.post(f"{student}/release/").status_code == 404
    assert api.get(f"/api/broadcasts/{watched.broadcast.pk}/").status_code == 404
    assert api.post(f"/api/broadcasts/{watched.broadcast.pk}/students/owner/retry/").status_code == 404
    client.force_login(other_teacher)
    assert client.get(f"/classrooms/{classroom.pk}/").status_code == 404
    assert client.get(f"/classrooms/{classroom.pk}/students/owner/").status_code == 404
    assert client.get(f"/classrooms/{classroom.pk}/students/owner/?mode=control").status_code == 404
    # Nothing they tried changed anything.
    assert classroom.teachers.count() == 1 and classroom.students.count() == 2
    assert not Broadcast.objects.exclude(pk=watched.broadcast.pk).exists()
    assert teaching.demo_workspace(classroom) == watched.demo
    assert teaching.controlled_by(watched.workspace) == "teach"
    assert Seat.objects.get(pk=watched.seat.pk).state == "failed"
    assert Workspace.objects.get(pk=watched.workspace.pk).state == "running"


def test_the_classes_own_teacher_passes_the_same_checks(api_client, client, teacher, classroom, watched):
    """The counterpart of the 404s above: the same requests work for the class's teacher."""
    api = as_user(api_client, teacher)
    base = f"/api/classrooms/{classroom.pk}"
    assert (
        api.post(f"{base}/students/owner/display-token/", {"mode": "view"}, format="json").status_code == 200
    )
    assert api.get(f"/api/broadcasts/{watched.broadcast.pk}/").status_code == 200
    client.force_login(teacher)
    assert client.get(f"/classrooms/{classroom.pk}/students/owner/").status_code == 200
    assert api.delete(f"{base}/demo/").status_code == 204
    assert teaching.demo_workspace(classroom) is None


def test_students_cannot_act_for_their_teacher(
    api_client, client, classroom, owner, teammate, stranger, watched
):
    api = as_user(api_client, owner)
    base = f"/api/classrooms/{classroom.pk}"
    assert api.post(f"{base}/stop/").status_code == 404
    assert api.post(f"{base}/collect/").status_code == 404
    assert api.post(f"{base}/broadcasts/", {"display": "desktop"}, format="json").status_code == 404
    assert api.post(f"{base}/demo/", {"workspace": watched.workspace.pk}, format="json").status_code == 404
    assert api.delete(f"{base}/demo/").status_code == 404
    assert api.post(f"/api/broadcasts/{watched.broadcast.pk}/students/owner/retry/").status_code == 404
    assert api.post(f"{base}/students/owner/release/").status_code == 404
    assert teaching.demo_workspace(classroom) == watched.demo
    assert Workspace.objects.get(pk=watched.workspace.pk).state == "running"
    assert Seat.objects.get(pk=watched.seat.pk).state == "failed"
    # The demo page is for the class's students only.
    client.force_login(teammate)
    assert client.get(f"/classrooms/{classroom.pk}/demo/").status_code == 200
    client.force_login(stranger)
    assert client.get(f"/classrooms/{classroom.pk}/demo/").status_code == 404
    assert as_user(api_client, stranger).post(f"{base}/demo/token/").status_code == 404


def test_a_student_who_left_the_class_is_not_watched(api_client, client, teacher, classroom, owner, watched):
    api = as_user(api_client, teacher)
    student = f"/api/classrooms/{classroom.pk}/students/owner"
    assert api.post(f"{student}/display-token/", {"mode": "view"}, format="json").status_code == 200
    classroom.students.remove(owner)
    assert api.post(f"{student}/display-token/", {"mode": "view"}, format="json").status_code == 404
    assert api.post(f"{student}/display-token/", {"mode": "control"}, format="json").status_code == 404
    assert api.get(f"{student}/thumbnail.png").status_code == 404
    client.force_login(teacher)
    assert client.get(f"/classrooms/{classroom.pk}/students/owner/").status_code == 404


def test_a_student_never_reaches_another_students_screen(
    api_client, classroom, owner, teammate, catalog, client
):
    ws = Workspace.objects.create(
        owner=teammate,
        display=Image.objects.get(slug="desktop"),
        state="running",
        engine_state={"endpoint": {"host": "10.0.0.2", "port": 5900}},
    )
    sent = Broadcast.objects.create(
        classroom=classroom, teacher=classroom.teachers.first(), display=ws.display
    )
    Seat.objects.create(broadcast=sent, student=teammate, workspace=ws, state="running")
    student = as_user(api_client, owner)
    base = f"/api/classrooms/{classroom.pk}"
    assert (
        student.post(f"{base}/students/teammate/display-token/", {"mode": "view"}, format="json").status_code
        == 404
    )
    assert student.get(f"{base}/students/teammate/thumbnail.png").status_code == 404
    assert student.get(f"/api/broadcasts/{sent.pk}/").status_code == 404
    assert (
        student.post(f"/api/workspaces/{ws.pk}/display-token/", {"mode": "view"}, format="json").status_code
        == 404
    )
    client.force_login(owner)
    assert client.get(f"/classrooms/{classroom.pk}/students/teammate/").status_code == 403


def test_broadcast_answers_202_with_a_seat_per_student(api_client, teacher, classroom, catalog):
    response = as_user(api_client, teacher).post(
        f"/api/classrooms/{classroom.pk}/broadcasts/",
        {"display": "desktop", "apps": ["ide"], "files": "week1"},
        format="json",
    )
    assert response.status_code == 202
    sent = api_client.get(f"/api/broadcasts/{response.json()['id']}/").json()
    assert sent["state"] == "queued"
    assert [(s["username"], s["state"], s["workspace"]) for s in sent["students"]] == [
        ("owner", "queued", None),
        ("teammate", "queued", None),
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"display": "ide"}, "'ide' is an app image"),
        ({"display": "nope"}, "Unknown image(s): nope"),
        ({"display": "desktop", "files": "../etc"}, "must be a folder inside your /data"),
    ],
)
def test_bad_broadcasts_are_400(api_client, teacher, classroom, catalog, body, words):
    response = as_user(api_client, teacher).post(
        f"/api/classrooms/{classroom.pk}/broadcasts/", body, format="json"
    )
    assert response.status_code == 400
    assert words in response.json()["detail"]
    assert not Broadcast.objects.exists()


def test_only_a_failed_seat_can_be_retried(api_client, teacher, classroom, catalog, owner):
    sent = Broadcast.objects.create(
        classroom=classroom, teacher=teacher, display=Image.objects.get(slug="desktop")
    )
    seat = Seat.objects.create(broadcast=sent, student=owner, state="running")
    client = as_user(api_client, teacher)
    assert client.post(f"/api/broadcasts/{sent.pk}/students/owner/retry/").status_code == 409
    Seat.objects.filter(pk=seat.pk).update(state="failed")
    assert client.post(f"/api/broadcasts/{sent.pk}/students/owner/retry/").status_code == 202
    assert Seat.objects.get(pk=seat.pk).state == "queued"


def test_demo_token_needs_a_running_demo_and_membership(
    api_client, classroom, owner, stranger, teacher, catalog
):
    base = f"/api/classrooms/{classroom.pk}"
    assert as_user(api_client, owner).post(f"{base}/demo/token/").status_code == 409
    assert as_user(api_client, stranger).post(f"{base}/demo/token/").status_code == 404
    mine = Workspace.objects.create(
        owner=teacher,
        display=Image.objects.get(slug="desktop"),
        state="running",
        engine_state={"endpoint": ENDPOINT},
    )
    theirs = Workspace.objects.create(owner=owner, display=mine.display, state="running")
    teacher_client = as_user(api_client, teacher)
    assert teacher_client.post(f"{base}/demo/", {"workspace": theirs.pk}, format="json").status_code == 404
    assert teacher_client.post(f"{base}/demo/", {"workspace": mine.pk}, format="json").status_code == 202
    token = as_user(api_client, owner).post(f"{base}/demo/token/").json()
    assert token["mode"] == "view" and token["password"] == mine.vnc_view_password
    as_user(api_client, teacher).delete(f"{base}/demo/")
    assert as_user(api_client, owner).post(f"{base}/demo/token/").status_code == 409


def test_classroom_pages_are_for_its_teachers(client, teacher, other_teacher, classroom, catalog):
    client.force_login(teacher)
    assert client.get(f"/classrooms/{classroom.pk}/").status_code == 200
    assert client.get("/teacher/").status_code == 200
    client.force_login(other_teacher)
    assert client.get(f"/classrooms/{classroom.pk}/").status_code == 404


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffusername\ncarol\ndave\n",  # Excel's "CSV UTF-8": a byte order mark, then the header
        "\ufeffcarol\r\ndave\r\n",
        "Username,Full name\r\ncarol,Carol C\r\ndave,Dave D\r\n",
        "carol\n\n  dave  \n",
    ],
)
def test_usernames_from_a_csv(text):
    assert classrooms.usernames_from_csv(text) == ["carol", "dave"]


def test_a_csv_with_a_byte_order_mark_adds_its_students(api_client, teacher, classroom, make_user):
    make_user("carol")
    response = as_user(api_client, teacher).post(
        f"/api/classrooms/{classroom.pk}/students/", {"csv": "\ufeffusername\r\ncarol\r\n"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["invited"] == ["carol"]


def test_control_lasts_while_any_teacher_page_holds_it(api_client, teacher, classroom, watched, make_user):
    co = make_user("co-teach", role="teacher")
    classroom.teachers.add(co)
    base = f"/api/classrooms/{classroom.pk}/students/owner"
    api = as_user(api_client, teacher)
    for session in ("tab-one", "tab-two"):
        response = api.post(f"{base}/display-token/?session={session}", {"mode": "control"}, format="json")
        assert response.status_code == 200 and response.json()["mode"] == "control"
    api.post(f"{base}/display-token/?session=tab-one", {"mode": "control"}, format="json")  # a reconnect
    as_user(api_client, co).post(f"{base}/display-token/", {"mode": "control"}, format="json")
    assert teaching.controlled_by(watched.workspace) == "co-teach, teach"

    api = as_user(api_client, teacher)
    assert api.post(f"{base}/release/?session=tab-one").status_code == 204
    assert teaching.controlled_by(watched.workspace) == "co-teach, teach", "tab-two still controls"
    assert api.post(f"{base}/release/?session=tab-two").status_code == 204
    assert teaching.controlled_by(watched.workspace) == "co-teach"
    # One teacher cannot end another's session by naming it.
    assert api.post(f"{base}/release/").status_code == 204
    assert teaching.controlled_by(watched.workspace) == "co-teach"
    assert as_user(api_client, co).post(f"{base}/release/").status_code == 204
    assert teaching.controlled_by(watched.workspace) is None
    # A view token starts no control.
    api = as_user(api_client, teacher)
    api.post(f"{base}/display-token/?session=tab-three", {"mode": "view"}, format="json")
    assert teaching.controlled_by(watched.workspace) is None
    bad = api.post(f"{base}/display-token/?session=no%20spaces", {"mode": "control"}, format="json")
    assert bad.status_code == 400 and "control session" in bad.json()["detail"]


def test_a_control_session_that_is_not_renewed_ends_with_its_connections(
    api_client, teacher, classroom, watched, monkeypatch
):
    base = f"/api/classrooms/{classroom.pk}/students/owner"
    api = as_user(api_client, teacher)
    api.post(f"{base}/display-token/?session=crashed-tab", {"mode": "control"}, format="json")
    api.post(f"{base}/display-token/?session=live-tab", {"mode": "control"}, format="json")
    redis = redis_client()
    opened = display_tokens.now(redis)
    crashed = teaching.control_scope(watched.workspace, teacher, "crashed-tab")
    live = teaching.control_scope(watched.workspace, teacher, "live-tab")
    now = teaching.time.time()
    monkeypatch.setattr(teaching.time, "time", lambda: now + teaching.CONTROL_TTL - 5)
    assert api.post(f"{base}/renew/?session=live-tab").status_code == 204  # its page renews it
    monkeypatch.setattr(teaching.time, "time", lambda: now + teaching.CONTROL_TTL + 1)
    tasks.expire_control()
    assert teaching.controlled_by(watched.workspace) == "teach"  # live-tab still holds it
    assert display_tokens.revoked_since(redis, (crashed,), opened)
    assert not display_tokens.revoked_since(redis, (live,), opened)
    monkeypatch.setattr(teaching.time, "time", lambda: now + 3 * teaching.CONTROL_TTL)
    tasks.expire_control()
    assert teaching.controlled_by(watched.workspace) is None
    assert display_tokens.revoked_since(redis, (live,), opened)


def test_the_viewer_renews_its_control_session(client, teacher, classroom, watched):
    client.force_login(teacher)
    page = client.get(f"/classrooms/{classroom.pk}/students/owner/?mode=control").content.decode()
    session = page.split('data-token-url="')[1].split('"')[0].split("?session=")[1]
    renew = f"/api/classrooms/{classroom.pk}/students/owner/renew/?session={session}&amp;mode=control"
    assert f'data-renew-url="{renew}"' in page


def test_the_student_page_is_one_control_session(client, teacher, classroom, watched):
    client.force_login(teacher)
    page = client.get(f"/classrooms/{classroom.pk}/students/owner/?mode=control").content.decode()
    token_url = page.split('data-token-url="')[1].split('"')[0]
    release_url = page.split('data-release-url="')[1].split('"')[0]
    session = token_url.split("?session=")[1]
    assert len(session) >= 16 and release_url.endswith(f"/release/?session={session}")
    other = client.get(f"/classrooms/{classroom.pk}/students/owner/?mode=control").content.decode()
    assert session not in other, "each page is its own session"
    # Watching is a session too: the student is told while it lasts, and it ends with the page.
    view = client.get(f"/classrooms/{classroom.pk}/students/owner/").content.decode()
    watching = view.split('data-token-url="')[1].split('"')[0].split("?session=")[1]
    assert watching not in (session, "") and session not in view
    assert (
        f'data-release-url="/api/classrooms/{classroom.pk}/students/owner/release/?session={watching}"'
        in view
    )
    assert f"renew/?session={watching}&amp;mode=view" in view


def test_a_students_pages_learn_what_is_pending(api_client, teacher, classroom, owner, teammate, watched):
    teaching.start_control(teacher, watched.workspace, "tab-one")
    ws = watched.workspace
    sent = watched.broadcast
    Seat.objects.filter(pk=watched.seat.pk).update(state="running")
    teaching.notify_opened(Seat.objects.select_related("broadcast__classroom").get(pk=watched.seat.pk))
    student = as_user(api_client, owner)
    body = student.get("/api/notices/").json()
    assert body["notices"] == [
        {
            "type": "notice",
            "id": ws.pk,
            "workspace": ws.pk,
            "message": f"teach started Desktop for {classroom.name}.",
            "open": f"/workspaces/{ws.pk}/",
        }
    ]
    assert body["control"] == [
        {
            "type": "control",
            "active": True,
            "by": "teach",
            "mode": "control",
            "workspace": ws.pk,
            "message": "teach is controlling your screen.",
        }
    ]
    assert [(d["classroom"], d["open"]) for d in body["demos"]] == [
        (classroom.pk, f"/classrooms/{classroom.pk}/demo/")
    ]
    # Nobody else sees it.
    other = as_user(api_client, teammate).get("/api/notices/").json()
    assert other["notices"] == [] and other["control"] == [] and len(other["demos"]) == 1
    # Dismissed, it is gone; a stopped workspace has nothing to open or control.
    student = as_user(api_client, owner)
    assert student.delete(f"/api/notices/{ws.pk}/").status_code == 204
    assert student.get("/api/notices/").json()["notices"] == []
    teaching.notify_opened(Seat.objects.select_related("broadcast__classroom").get(pk=watched.seat.pk))
    Workspace.objects.filter(pk=ws.pk).update(state="stopped")
    body = student.get("/api/notices/").json()
    assert body["notices"] == [] and body["control"] == []
    assert Broadcast.objects.filter(
        pk=sent.pk, state=sent.state
    ).exists()  # the broadcast itself is untouched


def test_the_grid_shows_a_seat_as_its_workspace_is(api_client, teacher, classroom, watched):
    api = as_user(api_client, teacher)

    def shown():
        seat = api.get(f"/api/broadcasts/{watched.broadcast.pk}/").json()["students"][0]
        return seat["state"], seat["message"]

    Seat.objects.filter(pk=watched.seat.pk).update(state="running", message="Running")
    Workspace.objects.filter(pk=watched.workspace.pk).update(state="running", message="Running")
    assert shown() == ("running", "Running")
    Workspace.objects.filter(pk=watched.workspace.pk).update(state="stopped", message="Stopped")
    assert shown() == ("stopped", "Stopped")
    Workspace.objects.filter(pk=watched.workspace.pk).update(state="starting", message="Starting the display")
    assert shown() == ("starting", "Starting the display")
    Workspace.objects.filter(pk=watched.workspace.pk).update(state="failed", message="The display exited")
    assert shown() == ("failed", "The display exited")
    # A seat that failed keeps its reason (and its Retry) while its workspace is stopped.
    Seat.objects.filter(pk=watched.seat.pk).update(state="failed", message="Copying failed")
    Workspace.objects.filter(pk=watched.workspace.pk).update(state="stopped", message="Stopped")
    assert shown() == ("failed", "Copying failed")


def _token(response) -> str:
    return parse_qs(urlsplit(response.json()["url"]).query)["token"][0]


def test_ending_a_demo_ends_the_students_tokens_not_the_teachers(
    api_client, teacher, classroom, owner, watched
):
    base = f"/api/classrooms/{classroom.pk}"
    students = _token(as_user(api_client, owner).post(f"{base}/demo/token/"))
    own = _token(
        as_user(api_client, teacher).post(
            f"/api/workspaces/{watched.demo.pk}/display-token/", {"mode": "control"}, format="json"
        )
    )
    assert as_user(api_client, teacher).delete(f"{base}/demo/").status_code == 204
    client = redis_client()
    assert display_tokens.consume(client, students) is None
    grant = display_tokens.consume(client, own)
    assert grant is not None and grant.mode == "control"


def test_releasing_one_session_ends_only_its_connections(api_client, teacher, classroom, watched):
    base = f"/api/classrooms/{classroom.pk}/students/owner"
    api = as_user(api_client, teacher)
    one = _token(api.post(f"{base}/display-token/?session=tab-one", {"mode": "control"}, format="json"))
    two = _token(api.post(f"{base}/display-token/?session=tab-two", {"mode": "control"}, format="json"))
    assert api.post(f"{base}/release/?session=tab-one").status_code == 204
    client = redis_client()
    assert display_tokens.consume(client, one) is None
    grant = display_tokens.consume(client, two)
    assert grant is not None and teaching.control_scope(watched.workspace, teacher, "tab-two") in grant.scopes
