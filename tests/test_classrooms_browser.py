"""A teacher broadcasts from the classroom page and watches the grid; an online
student's browser opens the new workspace by itself."""

import pytest

from tests.conftest import screenshot
from tests.test_pages_browser import login
from workspaces.models import Classroom, User
from workspaces.services import classrooms

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.docker]


def test_teacher_broadcasts_and_watches_the_class(browser, live_server_url, make_user, engine):
    make_user("mr-babbage", role="teacher")
    for n in (1, 2, 3):
        make_user(f"kid{n}")
    student_context = browser.new_context(viewport={"width": 1280, "height": 800})
    student = student_context.new_page()
    login(student, live_server_url, "kid1")
    student.wait_for_selector("#live-indicator.on")

    teacher_context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = teacher_context.new_page()
    login(page, live_server_url, "mr-babbage")
    page.wait_for_url(f"{live_server_url}/teacher/")
    page.fill("#new-classroom input[name=name]", "Difference Engines")
    page.fill("#new-classroom textarea[name=students]", "kid1, kid2, kid3")
    page.click("#new-classroom button[type=submit]")
    page.wait_for_url(f"{live_server_url}/classrooms/*/")
    page.wait_for_selector("#live-indicator.on")
    # Invited, not members yet: nobody's screen is in the grid.
    assert page.locator(".thumb").count() == 0
    assert "kid1, kid2, kid3" in page.inner_text("#invited")
    # kid1 accepts on their dashboard; kid2 and kid3 join with the class's code.
    student.reload()
    invitation = student.locator("#invitations li", has_text="Difference Engines")
    invitation.locator("button", has_text="Accept").click()
    student.locator("#my-classrooms", has_text="Difference Engines").wait_for()
    student.wait_for_selector("#live-indicator.on")
    classroom = Classroom.objects.get(name="Difference Engines")
    for kid in ("kid2", "kid3"):
        classrooms.join(User.objects.get(username=kid), classroom.join_code)
    page.reload()
    page.wait_for_selector("#live-indicator.on")
    assert page.locator(".thumb").count() == 3
    screenshot(page, "classroom-before-broadcast")

    page.click("#broadcast-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelectorAll('.thumb .state.running').length === 3", timeout=120000
    )
    # Every running seat shows a real picture of its screen.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.thumb img')].filter(i => i.complete && i.naturalWidth === 320).length === 3",
        timeout=30000,
    )
    screenshot(page, "classroom-grid")

    # The online student was taken to their new workspace, with a notice.
    student.wait_for_url(f"{live_server_url}/workspaces/*/", timeout=30000)
    student.wait_for_selector("#overlay", state="hidden", timeout=30000)
    screenshot(student, "student-opened-by-broadcast")

    # The teacher opens one screen large, view-only.
    page.locator(".thumb", has_text="kid2").locator("a", has_text="View").click()
    page.wait_for_selector("#screen canvas")
    page.wait_for_selector("#overlay", state="hidden", timeout=30000)
    assert "View only" in page.inner_text(".viewer-tools")
    screenshot(page, "teacher-views-a-student")

    # Stop all: the grid follows, and a reload still shows every seat stopped.
    page.click("a[title=Back]")
    page.wait_for_selector("#live-indicator.on")
    page.click("#stop-all")
    page.click("#confirm-stop button[value=stop]")
    page.wait_for_function(
        "() => document.querySelectorAll('.thumb .state.stopped').length === 3", timeout=60000
    )
    page.reload()
    page.wait_for_selector(".thumb .state")
    assert page.locator(".thumb .state.stopped").count() == 3
    assert page.locator(".thumb img[src]").count() == 0, "no pictures asked of stopped screens"
    screenshot(page, "classroom-stopped")
    teacher_context.close()
    student_context.close()
