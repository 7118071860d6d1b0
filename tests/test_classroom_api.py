"""Classrooms without containers: membership, permissions, validation."""

import pytest

from workspaces.models import Broadcast, Classroom, Image, Seat, Workspace

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


def test_teacher_creates_a_classroom_with_students(api_client, teacher, owner, teammate):
    response = as_user(api_client, teacher).post(
        "/api/classrooms/", {"name": "Maths", "students": ["Owner", "teammate"]}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["students"] == ["owner", "teammate"] and body["teachers"] == ["teach"]
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
    assert response.json()["students"] == ["carol", "dave", "owner", "teammate"]


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


def test_a_teacher_of_another_class_gets_404_everywhere(api_client, other_teacher, classroom, catalog, owner):
    client = as_user(api_client, other_teacher)
    base = f"/api/classrooms/{classroom.pk}"
    assert client.get(f"{base}/").status_code == 404
    assert client.post(f"{base}/students/", {"students": ["owner"]}, format="json").status_code == 404
    assert client.post(f"{base}/broadcasts/", {"display": "desktop"}, format="json").status_code == 404
    assert client.post(f"{base}/stop/").status_code == 404
    assert client.post(f"{base}/collect/").status_code == 404
    assert client.post(f"{base}/demo/", {"workspace": 1}, format="json").status_code == 404
    assert (
        client.post(f"{base}/students/owner/display-token/", {"mode": "view"}, format="json").status_code
        == 404
    )
    assert client.get(f"{base}/students/owner/thumbnail.png").status_code == 404
    sent = Broadcast.objects.create(
        classroom=classroom, teacher=classroom.teachers.first(), display=Image.objects.get(slug="desktop")
    )
    assert client.get(f"/api/broadcasts/{sent.pk}/").status_code == 404


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
        engine_state={"endpoint": {"host": "10.0.0.3", "port": 5900}},
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
