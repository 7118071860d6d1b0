"""Enrolment by consent (or an admin), members-only reach, and the audit log.

Three people for every rule: the class's teacher ("teach"), another teacher
("other-teacher") and a student outside the class ("stranger"); plus the
students whose consent is asked ("owner", "teammate").
"""

from __future__ import annotations

import pytest

from workspaces.display import tokens as display_tokens
from workspaces.lib.redis import redis_client
from workspaces.models import (
    AuditEvent,
    AuditLogIsAppendOnly,
    Broadcast,
    Classroom,
    Image,
    Seat,
    Workspace,
)
from workspaces.services import audit, lifecycle, teaching, thumbnails

pytestmark = pytest.mark.django_db

ENDPOINT = {"path": "/run/lattice/test.sock", "container_id": "c0ffee", "server_pid": 4242}


@pytest.fixture
def desktop(db):
    return Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )


@pytest.fixture
def other_teacher(make_user):
    return make_user("other-teacher", role="teacher")


@pytest.fixture
def room(teacher):
    classroom = Classroom.objects.create(name="Looms")
    classroom.teachers.add(teacher)
    return classroom


def as_user(api_client, user):
    api_client.force_authenticate(user)
    return api_client


def running_seat(room, student, desktop) -> Workspace:
    """What a broadcast leaves for one student: a seat and its running workspace."""
    ws = Workspace.objects.create(
        owner=student, display=desktop, state="running", engine_state={"endpoint": ENDPOINT}
    )
    sent = Broadcast.objects.create(classroom=room, teacher=room.teachers.first(), display=desktop)
    Seat.objects.create(broadcast=sent, student=student, workspace=ws, state="running")
    return ws


@pytest.fixture(autouse=True)
def _no_sessions_left():
    yield
    client = redis_client()
    for prefix in (teaching.CONTROL_KEY, teaching.GRID_KEY):
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


# --- invitations ---------------------------------------------------------------------


def test_a_teacher_invites_and_the_invited_get_nothing_until_they_accept(
    api_client, teacher, owner, teammate, desktop
):
    api = as_user(api_client, teacher)
    created = api.post(
        "/api/classrooms/", {"name": "Looms", "students": ["owner", "teammate"]}, format="json"
    )
    room = Classroom.objects.get(pk=created.json()["id"])
    assert created.json()["invited"] == ["owner", "teammate"] and created.json()["students"] == []
    # Not a member: no broadcast, no seat.
    refused = api.post(f"/api/classrooms/{room.pk}/broadcasts/", {"display": "desktop"}, format="json")
    assert refused.status_code == 400 and "no members yet" in refused.json()["detail"]
    assert not Seat.objects.exists()

    assert as_user(api_client, owner).post(f"/api/classrooms/{room.pk}/accept/").status_code == 200
    body = as_user(api_client, teacher).get(f"/api/classrooms/{room.pk}/").json()
    assert (body["students"], body["invited"]) == (["owner"], ["teammate"])
    sent = api.post(f"/api/classrooms/{room.pk}/broadcasts/", {"display": "desktop"}, format="json")
    assert sent.status_code == 202
    assert [s["username"] for s in sent.json()["students"]] == ["owner"], "the invited one gets no seat"


def test_an_invited_students_screen_is_nobodys_to_watch(api_client, teacher, room, owner, desktop):
    ws = running_seat(room, owner, desktop)  # a seat of theirs from before (say they left)
    room.invited.add(owner)
    base = f"/api/classrooms/{room.pk}/students/owner"
    api = as_user(api_client, teacher)
    assert api.post(f"{base}/display-token/", {"mode": "view"}, format="json").status_code == 404
    assert api.post(f"{base}/display-token/", {"mode": "control"}, format="json").status_code == 404
    assert api.get(f"{base}/thumbnail.png").status_code == 404
    assert teaching.watched_by(ws) == {}
    as_user(api_client, owner).post(f"/api/classrooms/{room.pk}/accept/")
    assert (
        as_user(api_client, teacher)
        .post(f"{base}/display-token/", {"mode": "view"}, format="json")
        .status_code
        == 200
    )


def test_invitations_are_answered_only_by_the_invited(
    api_client, teacher, other_teacher, room, owner, stranger
):
    room.invited.add(owner)
    # The student sees it on their dashboard and in the API.
    assert [c["name"] for c in as_user(api_client, owner).get("/api/classrooms/invitations/").json()] == [
        "Looms"
    ]
    for somebody in (stranger, teacher, other_teacher):
        api = as_user(api_client, somebody)
        assert api.post(f"/api/classrooms/{room.pk}/accept/").status_code == 404
        assert api.post(f"/api/classrooms/{room.pk}/decline/").status_code == 404
        assert api.get("/api/classrooms/invitations/").json() == []
    assert not room.students.exists()
    assert as_user(api_client, owner).post(f"/api/classrooms/{room.pk}/decline/").status_code == 204
    assert not room.invited.exists() and not room.students.exists()
    assert as_user(api_client, owner).post(f"/api/classrooms/{room.pk}/accept/").status_code == 404


def test_the_dashboard_lists_invitations(client, room, owner):
    room.invited.add(owner)
    client.force_login(owner)
    page = client.get("/student/").content.decode()
    assert f'data-invitation="{room.pk}"' in page and "Accept" in page and "Decline" in page


def test_joining_with_the_code_answers_the_invitation(api_client, room, owner):
    room.invited.add(owner)
    response = as_user(api_client, owner).post(
        "/api/classrooms/join/", {"code": room.join_code}, format="json"
    )
    assert response.status_code == 200
    assert list(room.students.all()) == [owner] and not room.invited.exists()
    assert AuditEvent.objects.filter(action=audit.JOIN, subject=owner, classroom=room).count() == 1


def test_another_teacher_cannot_invite_into_a_class_not_theirs(api_client, other_teacher, room, owner):
    response = as_user(api_client, other_teacher).post(
        f"/api/classrooms/{room.pk}/students/", {"students": ["owner"]}, format="json"
    )
    assert response.status_code == 404
    assert not room.invited.exists()


def test_only_an_admin_places_students_directly(
    api_client, admin_user, teacher, other_teacher, room, owner, stranger
):
    url = f"/api/admin/classrooms/{room.pk}/students/"
    for somebody in (teacher, other_teacher, stranger):
        response = as_user(api_client, somebody).post(url, {"students": ["owner"]}, format="json")
        assert response.status_code == 403
        assert response.json()["detail"] == "Only administrators may do this."
    assert not room.students.exists()
    room.invited.add(owner)
    response = as_user(api_client, admin_user).post(url, {"students": ["owner"]}, format="json")
    assert response.status_code == 200
    assert (response.json()["students"], response.json()["invited"]) == (["owner"], [])
    event = AuditEvent.objects.get(action=audit.PLACE)
    assert (event.actor_name, event.subject_name, event.classroom_id) == ("boss", "owner", room.pk)


# --- leaving -----------------------------------------------------------------------


def test_a_student_who_leaves_ends_every_view_and_control_through_the_class(
    api_client, teacher, room, owner, stranger, desktop
):
    room.students.add(owner)
    ws = running_seat(room, owner, desktop)
    base = f"/api/classrooms/{room.pk}/students/owner"
    api = as_user(api_client, teacher)
    for session, mode in (("tab-view", "view"), ("tab-control", "control")):
        response = api.post(f"{base}/display-token/?session={session}", {"mode": mode}, format="json")
        assert response.status_code == 200
    redis = redis_client()
    opened = display_tokens.now(redis)
    assert teaching.watched_by(ws) == {"control": ["teach"], "view": ["teach"]}
    # Somebody else cannot make them leave, nor leave a class they are not in.
    assert as_user(api_client, stranger).post(f"/api/classrooms/{room.pk}/leave/").status_code == 404
    assert teaching.watched_by(ws) != {}

    assert as_user(api_client, owner).post(f"/api/classrooms/{room.pk}/leave/").status_code == 204

    assert not room.students.exists()
    assert teaching.watched_by(ws) == {}
    for session, mode in (("tab-view", "view"), ("tab-control", "control")):
        scope = teaching.session_scope(ws, teacher, session, mode)
        assert display_tokens.revoked_since(redis, (scope,), opened), f"{mode} connection closed"
    ends = AuditEvent.objects.filter(action=audit.SESSION_END, subject=owner).order_by("mode")
    assert [(e.mode, e.detail["reason"]) for e in ends] == [
        ("control", "the student left the class"),
        ("view", "the student left the class"),
    ]
    api = as_user(api_client, teacher)
    assert api.post(f"{base}/display-token/", {"mode": "view"}, format="json").status_code == 404
    assert api.post(f"{base}/renew/?session=tab-view&mode=view").status_code == 404
    assert api.get(f"{base}/thumbnail.png").status_code == 404


# --- the student sees who watches ---------------------------------------------------


def test_viewing_is_a_session_the_student_sees(api_client, teacher, room, owner, desktop):
    room.students.add(owner)
    running_seat(room, owner, desktop)
    base = f"/api/classrooms/{room.pk}/students/owner"
    api = as_user(api_client, teacher)
    api.post(f"{base}/display-token/?session=tab-one", {"mode": "view"}, format="json")
    control = as_user(api_client, owner).get("/api/notices/").json()["control"]
    assert [(c["mode"], c["message"]) for c in control] == [("view", "teach is watching your screen.")]
    # The page renews it; closing the page ends it.
    api = as_user(api_client, teacher)
    assert api.post(f"{base}/renew/?session=tab-one&mode=view").status_code == 204
    assert api.post(f"{base}/release/?session=tab-one").status_code == 204
    assert as_user(api_client, owner).get("/api/notices/").json()["control"] == []


def test_a_view_nobody_renews_ends(api_client, teacher, room, owner, desktop, monkeypatch):
    room.students.add(owner)
    ws = running_seat(room, owner, desktop)
    api = as_user(api_client, teacher)
    api.post(
        f"/api/classrooms/{room.pk}/students/owner/display-token/?session=gone",
        {"mode": "view"},
        format="json",
    )
    now = teaching.time.time()
    monkeypatch.setattr(teaching.time, "time", lambda: now + teaching.CONTROL_TTL + 1)
    assert teaching.expire_control_sessions() == 1
    assert teaching.watched_by(ws) == {}
    end = AuditEvent.objects.get(action=audit.SESSION_END)
    assert (end.mode, end.detail["reason"]) == ("view", "not renewed")


def test_the_grid_counts_as_watching(api_client, teacher, other_teacher, room, owner, stranger, desktop):
    room.students.add(owner)
    ws = running_seat(room, owner, desktop)
    thumbnails.store(ws.pk, b"\x89PNG picture")
    url = f"/api/classrooms/{room.pk}/students/owner/thumbnail.png?session=grid-1"
    for somebody in (other_teacher, stranger):
        assert as_user(api_client, somebody).get(url).status_code == 404
    assert teaching.watched_by(ws) == {}
    assert as_user(api_client, teacher).get(url).status_code == 200
    control = as_user(api_client, owner).get("/api/notices/").json()["control"]
    assert [(c["mode"], c["message"]) for c in control] == [
        ("grid", "Your teacher can see your screen in the class grid (teach).")
    ]
    # Every picture renews the one session: one start in the log, not one a picture.
    as_user(api_client, teacher).get(url)
    assert AuditEvent.objects.filter(action=audit.SESSION_START, mode="grid").count() == 1
    # Another teacher cannot end it; the grid page closing does.
    assert (
        as_user(api_client, other_teacher)
        .post(f"/api/classrooms/{room.pk}/grid/release/?session=grid-1")
        .status_code
        == 404
    )
    assert teaching.watched_by(ws) == {"grid": ["teach"]}
    assert (
        as_user(api_client, teacher)
        .post(f"/api/classrooms/{room.pk}/grid/release/?session=grid-1")
        .status_code
        == 204
    )
    assert teaching.watched_by(ws) == {}
    assert as_user(api_client, owner).get("/api/notices/").json()["control"] == []


# --- the audit log --------------------------------------------------------------------


def test_view_and_control_sessions_are_in_the_audit_log(api_client, teacher, room, owner, desktop):
    room.students.add(owner)
    ws = running_seat(room, owner, desktop)
    base = f"/api/classrooms/{room.pk}/students/owner"
    api = as_user(api_client, teacher)
    api.post(f"{base}/display-token/?session=v1", {"mode": "view"}, format="json")
    api.post(f"{base}/display-token/?session=v1", {"mode": "view"}, format="json")  # a reconnect
    api.post(f"{base}/display-token/?session=c1", {"mode": "control"}, format="json")
    api.post(f"{base}/release/?session=v1")
    api.post(f"{base}/release/?session=c1")
    rows = [
        (e.action, e.mode, e.actor_name, e.subject_name, e.workspace_id, e.classroom_id, e.detail["session"])
        for e in AuditEvent.objects.order_by("pk")
    ]
    assert rows == [
        (audit.SESSION_START, "view", "teach", "owner", ws.pk, room.pk, "v1"),
        (audit.SESSION_START, "control", "teach", "owner", ws.pk, room.pk, "c1"),
        (audit.SESSION_END, "view", "teach", "owner", ws.pk, room.pk, "v1"),
        (audit.SESSION_END, "control", "teach", "owner", ws.pk, room.pk, "c1"),
    ]


def test_the_audit_log_cannot_be_changed_or_deleted(teacher, owner):
    event = audit.record(audit.SESSION_START, actor=teacher, subject=owner, mode="view")
    event.action = "screen.session.nothing"
    with pytest.raises(AuditLogIsAppendOnly):
        event.save()
    with pytest.raises(AuditLogIsAppendOnly):
        event.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(action="changed")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.all().delete()
    # Deleting the people leaves the row as it was.
    teacher.delete()
    owner.delete()
    kept = AuditEvent.objects.get(pk=event.pk)
    assert (kept.action, kept.actor_name, kept.subject_name) == (audit.SESSION_START, "teach", "owner")


def test_admins_read_the_audit_log_and_nobody_else(
    api_client, client, admin_user, teacher, other_teacher, owner, stranger
):
    audit.record(audit.SESSION_START, actor=teacher, subject=owner, mode="control")
    audit.record(audit.INVITE, actor=teacher, subject=stranger)
    for somebody in (teacher, other_teacher, owner, stranger):
        assert as_user(api_client, somebody).get("/api/admin/audit/").status_code == 403
    api = as_user(api_client, admin_user)
    body = api.get("/api/admin/audit/").json()
    assert [(e["action"], e["actor"], e["subject"]) for e in body] == [
        (audit.INVITE, "teach", "stranger"),
        (audit.SESSION_START, "teach", "owner"),
    ]
    assert [e["subject"] for e in api.get("/api/admin/audit/?action=screen.").json()] == ["owner"]
    assert [e["action"] for e in api.get("/api/admin/audit/?subject=stranger").json()] == [audit.INVITE]
    # The Django admin shows it, read-only; the admin dashboard lists the newest.
    client.force_login(admin_user)
    event = AuditEvent.objects.first()
    page = client.get(f"/django-admin/workspaces/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert (
        client.post(f"/django-admin/workspaces/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert client.get("/django-admin/workspaces/auditevent/add/").status_code == 403
    assert AuditEvent.objects.count() == 2
    assert b"screen.session.start" in client.get("/manage/").content


# --- bounds ---------------------------------------------------------------------------


def test_a_class_has_at_most_the_configured_size(api_client, settings, teacher, room, make_user, owner):
    settings.LATTICE_CLASSROOM_MAX_STUDENTS = 2
    make_user("carol")
    make_user("dave")
    response = as_user(api_client, teacher).post(
        f"/api/classrooms/{room.pk}/students/", {"students": ["owner", "carol", "dave"]}, format="json"
    )
    assert response.status_code == 429
    assert "the most a class may have is 2 (LATTICE_CLASSROOM_MAX_STUDENTS)" in response.json()["detail"]
    assert not room.invited.exists()
    room.students.add(make_user("erin"), make_user("fay"))
    joined = as_user(api_client, owner).post("/api/classrooms/join/", {"code": room.join_code}, format="json")
    assert joined.status_code == 429 and not room.students.filter(pk=owner.pk).exists()


def test_a_seat_is_tried_at_most_the_configured_times(api_client, settings, teacher, room, owner, desktop):
    settings.LATTICE_SEAT_MAX_ATTEMPTS = 3
    room.students.add(owner)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    seat = Seat.objects.create(broadcast=sent, student=owner, state="failed", attempts=3)
    response = as_user(api_client, teacher).post(f"/api/broadcasts/{sent.pk}/students/owner/retry/")
    assert response.status_code == 409
    assert "tried 3 times, the most allowed (LATTICE_SEAT_MAX_ATTEMPTS=3)" in response.json()["detail"]
    assert Seat.objects.get(pk=seat.pk).state == "failed"
    Seat.objects.filter(pk=seat.pk).update(attempts=2)
    assert (
        as_user(api_client, teacher).post(f"/api/broadcasts/{sent.pk}/students/owner/retry/").status_code
        == 202
    )


# --- saved images sent to a class ------------------------------------------------------


def test_an_unreviewed_saved_image_does_not_go_to_a_class(
    api_client, settings, teacher, room, owner, admin_user
):
    from tests.support.saved_images_fakes import make_saved_image
    from workspaces.models import PublishRequest

    room.students.add(owner)
    mine = make_saved_image(teacher, "my-desktop", kind="display", title="My desktop")
    url = f"/api/classrooms/{room.pk}/broadcasts/"
    api = as_user(api_client, teacher)
    refused = api.post(url, {"display": mine.slug}, format="json")
    assert refused.status_code == 403
    assert "an admin must review a saved image before it goes to a class" in refused.json()["detail"]
    # Submitted but not decided yet: still refused.
    PublishRequest.objects.create(image=mine, requested_by=teacher)
    assert api.post(url, {"display": mine.slug}, format="json").status_code == 403
    assert not Broadcast.objects.exists()
    # A site that allows unreviewed images in classes says so in its settings.
    settings.LATTICE_CLASSES_ALLOW_UNREVIEWED_IMAGES = True
    assert api.post(url, {"display": mine.slug}, format="json").status_code == 202


def test_an_admin_who_takes_a_student_out_ends_the_classes_access(
    client, admin_user, teacher, room, owner, desktop
):
    room.students.add(owner)
    ws = running_seat(room, owner, desktop)
    teaching.start_session(teacher, ws, teaching.CONTROL, "tab-one", room)
    client.force_login(admin_user)
    response = client.post(
        f"/django-admin/workspaces/classroom/{room.pk}/change/",
        {"name": room.name, "join_code": room.join_code, "teachers": [teacher.pk], "internet": "on"},
    )
    assert response.status_code == 302
    assert not room.students.exists()
    assert teaching.watched_by(ws) == {}
    removed = AuditEvent.objects.get(action=audit.REMOVE)
    assert (removed.actor_name, removed.subject_name) == ("boss", "owner")
    end = AuditEvent.objects.get(action=audit.SESSION_END)
    assert end.detail["reason"] == "an admin took the student out of the class"


def test_a_demo_is_in_the_audit_log(teacher, room, desktop):
    shown = Workspace.objects.create(
        owner=teacher, display=desktop, state="running", engine_state={"endpoint": ENDPOINT}
    )
    teaching.start_demo(room, shown)
    teaching.end_demo(room)
    assert list(
        AuditEvent.objects.order_by("pk").values_list(
            "action", "mode", "actor_name", "workspace_id", "classroom_id"
        )
    ) == [
        (audit.DEMO_START, "demo", "teach", shown.pk, room.pk),
        (audit.DEMO_END, "demo", "teach", shown.pk, room.pk),
    ]


def test_a_late_request_of_a_closed_page_starts_nothing(api_client, teacher, room, owner, desktop):
    """A reconnect or picture the page sent just before it went away must not tell the student they are watched."""
    room.students.add(owner)
    ws = running_seat(room, owner, desktop)
    thumbnails.store(ws.pk, b"\x89PNG picture")
    base = f"/api/classrooms/{room.pk}/students/owner"
    api = as_user(api_client, teacher)
    assert (
        api.post(f"{base}/display-token/?session=page-1", {"mode": "view"}, format="json").status_code == 200
    )
    assert api.get(f"{base}/thumbnail.png?session=grid-1").status_code == 200
    assert api.post(f"{base}/release/?session=page-1").status_code == 204
    assert api.post(f"/api/classrooms/{room.pk}/grid/release/?session=grid-1").status_code == 204

    late = api.post(f"{base}/display-token/?session=page-1", {"mode": "view"}, format="json")
    assert late.status_code == 409 and "open the screen again" in late.json()["detail"]
    assert api.post(f"{base}/renew/?session=page-1&mode=view").status_code == 409
    assert api.get(f"{base}/thumbnail.png?session=grid-1").status_code == 409
    assert teaching.watched_by(ws) == {}
    # An API client without a page (the default session) may watch again at once.
    for _ in range(2):
        assert api.post(f"{base}/display-token/", {"mode": "view"}, format="json").status_code == 200
        assert api.post(f"{base}/release/").status_code == 204


def test_the_admin_dashboard_names_an_events_class_and_keeps_a_deleted_ones_id(
    client, admin_user, teacher, owner
):
    looms = Classroom.objects.create(name="Looms of Tuesday")
    gone = Classroom.objects.create(name="Gone by now")
    audit.record(audit.INVITE, actor=teacher, subject=owner, classroom=looms)
    audit.record(audit.INVITE, actor=teacher, subject=owner, classroom=gone)
    gone_id = gone.pk
    gone.delete()
    client.force_login(admin_user)
    page = client.get("/manage/").content.decode()
    assert "<td>Looms of Tuesday</td>" in page
    assert f"<td>{gone_id}</td>" in page and "Gone by now" not in page


def test_a_student_who_leaves_while_a_token_is_issued_is_not_watched(
    api_client, teacher, room, owner, desktop, monkeypatch
):
    """The leave lands between the membership check and the session's start: it found nothing to end."""
    from workspaces.services import classrooms

    room.students.add(owner)
    ws = running_seat(room, owner, desktop)
    issue = lifecycle.issue_display_token

    def leave_meanwhile(*args, **kwargs):
        classrooms.leave(owner, room.pk)
        return issue(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "issue_display_token", leave_meanwhile)
    redis = redis_client()
    opened = display_tokens.now(redis)
    api = as_user(api_client, teacher)

    response = api.post(
        f"/api/classrooms/{room.pk}/students/owner/display-token/?session=tab-1",
        {"mode": "control"},
        format="json",
    )

    assert response.status_code == 404
    assert teaching.watched_by(ws) == {}
    scope = teaching.session_scope(ws, teacher, "tab-1", "control")
    assert display_tokens.revoked_since(redis, (scope,), opened), "the token just issued opens nothing"
    end = AuditEvent.objects.get(action=audit.SESSION_END)
    assert end.detail["reason"] == "the student left the class"


def test_sessions_stored_by_the_previous_version_are_dropped_not_raised(
    api_client, teacher, room, owner, desktop
):
    """Before a deploy a session was [session, teacher]: the notices and the beat's expiry must not break on it."""
    room.students.add(owner)
    ws = running_seat(room, owner, desktop)
    other = running_seat(room, owner, desktop)
    redis = redis_client()
    for workspace in (ws, other):
        redis.zadd(f"{teaching.CONTROL_KEY}{workspace.pk}", {'["tab-old", "teach"]': 0, "not json": 0})
    teaching.start_session(teacher, ws, teaching.VIEW, "tab-new", room)

    response = as_user(api_client, owner).get("/api/notices/")
    assert response.status_code == 200
    assert teaching.watched_by(ws) == {"view": ["teach"]}
    assert teaching.expire_control_sessions() == 0  # the beat: nothing it can read had expired
    assert redis.zcard(f"{teaching.CONTROL_KEY}{ws.pk}") == 1
    assert not redis.exists(f"{teaching.CONTROL_KEY}{other.pk}"), "only unreadable entries were there"


def test_an_admin_who_takes_a_student_out_ends_their_queued_seats(
    client, admin_user, teacher, room, owner, desktop
):
    room.students.add(owner)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    Seat.objects.create(broadcast=sent, student=owner)
    client.force_login(admin_user)
    response = client.post(
        f"/django-admin/workspaces/classroom/{room.pk}/change/",
        {"name": room.name, "join_code": room.join_code, "teachers": [teacher.pk], "internet": "on"},
    )
    assert response.status_code == 302
    seat = Seat.objects.get(broadcast=sent)
    assert (seat.state, seat.message) == ("stopped", "Taken out of the class")


def test_closing_the_grid_ends_only_what_it_showed(
    api_client, teacher, room, owner, make_user, desktop, monkeypatch
):
    """Not one release (and one announcement) per workspace the class ever had, on every tab switch."""
    mate = make_user("teammate")
    room.students.add(owner, mate)
    shown = running_seat(room, owner, desktop)
    for _ in range(3):
        running_seat(room, mate, desktop)  # earlier weeks' workspaces the grid never showed now
    thumbnails.store(shown.pk, b"\x89PNG picture")
    api = as_user(api_client, teacher)
    assert (
        api.get(f"/api/classrooms/{room.pk}/students/owner/thumbnail.png?session=grid-1").status_code == 200
    )
    announced: list[int] = []
    announce = teaching._announce
    monkeypatch.setattr(
        teaching, "_announce", lambda ws, sessions: (announced.append(ws.pk), announce(ws, sessions))
    )
    ended: list[int] = []
    end_session = teaching.end_session
    monkeypatch.setattr(
        teaching, "end_session", lambda ws, *a, **k: (ended.append(ws.pk), end_session(ws, *a, **k))
    )

    assert api.post(f"/api/classrooms/{room.pk}/grid/release/?session=grid-1").status_code == 204

    assert teaching.watched_by(shown) == {}
    assert ended == [shown.pk] and announced == [shown.pk]
    # Closed again (a second tab switch): nothing to end, nobody told anything new.
    assert api.post(f"/api/classrooms/{room.pk}/grid/release/?session=grid-1").status_code == 204
    assert ended == [shown.pk] and announced == [shown.pk]
    # A picture the closed page sent late starts nothing.
    assert (
        api.get(f"/api/classrooms/{room.pk}/students/owner/thumbnail.png?session=grid-1").status_code == 409
    )
    assert teaching.watched_by(shown) == {}
