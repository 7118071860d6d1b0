"""The clipboard when a teacher controls a student's screen: the student's desktop
neither reads the teacher's clipboard on its own nor writes to it without a
click. On one's own screen the clipboard is shared both ways, as before.

The real desktop, proxy and Chromium; the student's program that copies is an
X client in the display (tests/support/clipboard_owner.py). Every call the page makes
to navigator.clipboard is recorded, and the browser's real clipboard is read
at the end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import screenshot
from tests.test_pages_browser import login
from tests.test_viewer_browser import open_running_desktop
from workspaces.engine import names
from workspaces.models import Broadcast, Classroom, Image, Seat, User, Workspace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.docker]

OWNER_SCRIPT = (Path(__file__).parent / "support" / "clipboard_owner.py").read_text()

# Recorded before any script of the page runs: every clipboard call, and the
# real functions kept for the test itself.
SPY = """
window.__clipboardCalls = [];
const real = navigator.clipboard;
window.__realClipboard = { read: real.readText.bind(real), write: real.writeText.bind(real) };
real.readText = async () => { window.__clipboardCalls.push(["read"]); return window.__realClipboard.read(); };
real.writeText = async (text) => {
  window.__clipboardCalls.push(["write", text]);
  return window.__realClipboard.write(text);
};
"""


def copy_on_the_desktop(settings, workspace: Workspace, text: str) -> None:
    """A program of the student's copies text: it owns the X selections."""
    display = names.container(settings.LATTICE_ENGINE_PREFIX, workspace.engine_id, "display")
    subprocess.run(
        ["docker", "exec", "-d", "-u", "1000:1000", "-e", "DISPLAY=:0",
         "-e", "XAUTHORITY=/tmp/.X11-unix/Xauthority", display, "python3", "-c", OWNER_SCRIPT, text],
        check=True,
    )  # fmt: skip


def clipboard_page(browser, live_server_url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_url)
    page = context.new_page()
    page.add_init_script(SPY)
    return context, page


def real_clipboard(page) -> str:
    return page.evaluate("() => window.__realClipboard.read()")


def test_a_teacher_in_control_keeps_their_clipboard(
    page, browser, live_server_url, make_user, teacher, engine, settings
):
    ws_id = open_running_desktop(page, live_server_url, make_user, "ada")
    student = User.objects.get(username="ada")
    workspace = Workspace.objects.get(pk=ws_id)
    room = Classroom.objects.create(name="Looms")
    room.teachers.add(teacher)
    room.students.add(student)
    desktop = Image.objects.get(pk=workspace.display_id)
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop)
    Seat.objects.create(broadcast=sent, student=student, workspace=workspace, state="running")

    context, teacher_page = clipboard_page(browser, live_server_url)
    try:
        login(teacher_page, live_server_url, teacher.username)
        teacher_page.wait_for_url(f"{live_server_url}/teacher/")
        teacher_page.evaluate("() => window.__realClipboard.write('the teacher own password')")
        teacher_page.goto(f"{live_server_url}/classrooms/{room.pk}/students/ada/?mode=control")
        teacher_page.wait_for_selector("#overlay", state="hidden", timeout=30000)
        assert teacher_page.is_visible(".badge.control")
        # Working on the student's screen: it has the focus, again and again.
        for _ in range(3):
            teacher_page.click("#screen canvas", position={"x": 600, "y": 400})
            teacher_page.wait_for_timeout(300)

        copy_on_the_desktop(settings, workspace, "text the student copied")
        # The desktop's clipboard reaches the panel ...
        teacher_page.wait_for_function(
            "() => document.getElementById('clipboard-text').value === 'text the student copied'",
            timeout=15000,
        )
        # ... and nothing else: the browser's clipboard was neither read nor written.
        assert teacher_page.evaluate("() => window.__clipboardCalls") == []
        assert real_clipboard(teacher_page) == "the teacher own password"
        assert "news" in teacher_page.get_attribute("#clipboard-toggle", "class")

        # One click on the panel's button, and only then, it is the teacher's.
        teacher_page.click("#clipboard-toggle")
        teacher_page.click("#clipboard-copy")
        teacher_page.wait_for_function("() => window.__clipboardCalls.length === 1")
        assert teacher_page.evaluate("() => window.__clipboardCalls") == [
            ["write", "text the student copied"]
        ]
        assert real_clipboard(teacher_page) == "text the student copied"
        screenshot(teacher_page, "viewer-control-clipboard")
    finally:
        context.close()


def test_on_their_own_screen_the_clipboard_is_shared_both_ways(
    browser, live_server_url, make_user, engine, settings
):
    context, own_page = clipboard_page(browser, live_server_url)
    try:
        ws_id = open_running_desktop(own_page, live_server_url, make_user, "grace")
        own_page.goto(f"{live_server_url}/workspaces/{ws_id}/")
        own_page.wait_for_selector("#overlay", state="hidden", timeout=30000)
        own_page.click("#screen canvas", position={"x": 600, "y": 400})
        own_page.wait_for_function("() => window.__clipboardCalls.some(([kind]) => kind === 'read')")

        copy_on_the_desktop(settings, Workspace.objects.get(pk=ws_id), "copied on my desktop")
        own_page.wait_for_function(
            "() => window.__clipboardCalls.some(([k, t]) => k === 'write' && t === 'copied on my desktop')",
            timeout=15000,
        )
        assert real_clipboard(own_page) == "copied on my desktop"
        assert not own_page.is_visible("#clipboard-copy")
    finally:
        context.close()
