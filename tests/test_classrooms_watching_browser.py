"""A student sees, on their own page, whenever their teacher watches their
screen: a large view, or the class grid's pictures. Two Chromium tabs (the
student's and the teacher's) against the real server; no containers (the
workspace is a row whose display is never reached, which a view session does
not need)."""

import pytest

from tests.conftest import screenshot
from tests.support.fakes import endpoint_state
from tests.test_pages_browser import login
from workspaces.models import AuditEvent, Broadcast, Classroom, Image, Seat, Workspace
from workspaces.services import teaching, thumbnails

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def lesson(make_user, teacher):
    student = make_user("kit")
    room = Classroom.objects.create(name="Looms")
    room.teachers.add(teacher)
    room.students.add(student)  # an admin's placement (the API's is tested in test_classrooms_consent)
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )
    ws = Workspace.objects.create(
        owner=student,
        display=desktop,
        state="running",
        progress=100,
        engine_state=endpoint_state("/run/lattice/nothing-here.sock"),
    )
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop, state="done")
    Seat.objects.create(broadcast=sent, student=student, workspace=ws, state="running", message="Running")
    return room, student, ws


@pytest.fixture
def teacher_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


def student_on_dashboard(page, live_server_url) -> None:
    login(page, live_server_url, "kit")
    page.wait_for_url(f"{live_server_url}/student/")
    page.wait_for_selector("#live-indicator.on")


def test_the_student_sees_a_large_view_while_it_lasts(page, teacher_page, live_server_url, lesson):
    room, _student, ws = lesson
    student_on_dashboard(page, live_server_url)
    banner = page.locator(".control-banner")
    page.wait_for_timeout(500)
    assert banner.count() == 0, "nobody watches yet"

    login(teacher_page, live_server_url, "teach")
    teacher_page.wait_for_url(f"{live_server_url}/teacher/")
    teacher_page.goto(f"{live_server_url}/classrooms/{room.pk}/students/kit/")
    watching = page.locator(".control-banner", has_text="teach is watching your screen.")
    watching.wait_for(timeout=15000)
    screenshot(page, "student-watched-banner")
    page.reload()  # it lasts as long as the session, not as long as one page of the student's
    watching.wait_for()

    teacher_page.goto(f"{live_server_url}/teacher/")  # the teacher's page goes away: the session ends
    watching.wait_for(state="detached", timeout=15000)
    assert teaching.watched_by(ws) == {}
    events = list(AuditEvent.objects.filter(mode="view").order_by("pk").values_list("action", "detail"))
    actions = [action for action, _ in events]
    # The viewer may reconnect with a fresh token (this display never answers),
    # so the view can be more than one session: each one started and ended.
    assert actions and actions == ["screen.session.start", "screen.session.end"] * (len(actions) // 2), events


def test_the_student_sees_the_class_grid_while_it_is_open(page, teacher_page, live_server_url, lesson):
    room, _student, ws = lesson
    thumbnails.store(ws.pk, b"\x89PNG\r\n\x1a\n")  # what the worker would have captured
    student_on_dashboard(page, live_server_url)

    login(teacher_page, live_server_url, "teach")
    teacher_page.wait_for_url(f"{live_server_url}/teacher/")
    teacher_page.goto(f"{live_server_url}/classrooms/{room.pk}/")
    seen = page.locator(".control-banner", has_text="Your teacher can see your screen in the class grid")
    seen.wait_for(timeout=15000)
    screenshot(page, "student-seen-in-the-grid")

    teacher_page.goto(f"{live_server_url}/teacher/")
    seen.wait_for(state="detached", timeout=15000)
    assert teaching.watched_by(ws) == {}
