"""What a student is told survives reloads and late connections: a workspace a
broadcast opened, a teacher in control. Debian's Chromium against the real
server; no containers (the workspaces are rows only)."""

import pytest

from tests.conftest import screenshot
from tests.test_pages_browser import login
from workspaces.models import Broadcast, Classroom, Image, Seat, Workspace
from workspaces.services import teaching

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def lesson(make_user, teacher):
    student = make_user("kit")
    room = Classroom.objects.create(name="Looms")
    room.teachers.add(teacher)
    room.students.add(student)
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )
    return room, student, desktop


def opened(room, student, desktop) -> Workspace:
    """What start_seat leaves behind: a running seat, its workspace, the student's notice."""
    ws = Workspace.objects.create(owner=student, display=desktop, state="running", progress=100)
    sent = Broadcast.objects.create(classroom=room, teacher=room.teachers.get(), display=desktop)
    seat = Seat.objects.create(broadcast=sent, student=student, workspace=ws, state="running")
    teaching.notify_opened(Seat.objects.select_related("broadcast__classroom").get(pk=seat.pk))
    return ws


def test_a_student_offline_at_the_broadcast_is_taken_there_later(page, live_server_url, lesson):
    room, student, desktop = lesson
    ws = opened(room, student, desktop)  # before the student's page exists
    login(page, live_server_url, "kit")
    page.wait_for_url(f"{live_server_url}/workspaces/{ws.pk}/", timeout=15000)
    # Opened, so done: the next page load does not send them back.
    for _ in range(50):
        if not teaching.pending(student)["notices"]:
            break
        page.wait_for_timeout(100)
    else:
        raise AssertionError("the notice is still pending with its workspace open")
    page.goto(f"{live_server_url}/student/")
    page.wait_for_selector("#live-indicator.on")
    page.wait_for_timeout(1500)
    assert page.url == f"{live_server_url}/student/"


def test_a_notice_stays_until_dismissed_where_the_student_is_busy(page, live_server_url, lesson):
    room, student, desktop = lesson
    login(page, live_server_url, "kit")
    page.wait_for_url(f"{live_server_url}/student/")
    page.goto(f"{live_server_url}/password/")
    page.wait_for_selector("#live-indicator.on")
    page.focus("input[name=old_password]")  # typing: never taken away
    ws = opened(room, student, desktop)
    notice = page.locator(".toast.notice", has_text="teach started Desktop for Looms.")
    notice.wait_for()
    page.wait_for_timeout(1500)
    assert page.url == f"{live_server_url}/password/"
    screenshot(page, "student-notice-while-busy")

    page.reload()
    page.focus("input[name=old_password]")
    notice.wait_for()
    assert notice.locator("a", has_text="Open").get_attribute("href") == f"/workspaces/{ws.pk}/"
    notice.locator("button", has_text="Dismiss").click()
    notice.wait_for(state="detached")
    page.reload()
    page.wait_for_selector("#live-indicator.on")
    page.wait_for_timeout(800)
    assert page.locator(".toast.notice").count() == 0


def test_the_control_banner_survives_a_reload_and_one_closed_tab(page, live_server_url, lesson, teacher):
    _room, student, desktop = lesson
    ws = Workspace.objects.create(owner=student, display=desktop, state="running", progress=100)
    teaching.start_control(teacher, ws, "tab-one")
    teaching.start_control(teacher, ws, "tab-two")
    login(page, live_server_url, "kit")
    page.wait_for_url(f"{live_server_url}/student/")
    banner = page.locator(".control-banner", has_text="teach is controlling your screen.")
    banner.wait_for()
    screenshot(page, "student-control-banner")

    page.reload()
    banner.wait_for()
    page.wait_for_selector("#live-indicator.on")
    teaching.end_control(ws, teacher, "tab-one")  # one of the teacher's two tabs closes
    page.wait_for_timeout(1000)
    assert banner.is_visible()
    teaching.end_control(ws, teacher, "tab-two")
    banner.wait_for(state="detached")
    page.locator(".toast", has_text="no longer controls your screen").wait_for()
    page.reload()
    page.wait_for_selector("#live-indicator.on")
    page.wait_for_timeout(800)
    assert page.locator(".control-banner").count() == 0
