"""The teacher's class grid in Debian's Chromium against the real server, fed
with the events a broadcast sends; no containers (the workspaces are rows
only, so their thumbnails answer 409)."""

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import screenshot, until
from tests.test_pages_browser import login
from workspaces.models import Broadcast, Classroom, Image, Seat, Workspace
from workspaces.services import classrooms

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def lesson(make_user, teacher):
    room = Classroom.objects.create(name="Jacquard Looms")
    room.teachers.add(teacher)
    room.students.add(*[make_user(f"weaver{n}") for n in range(1, 5)])
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )
    sent = Broadcast.objects.create(classroom=room, teacher=teacher, display=desktop, state="running")
    seats = {}
    for student, state, ws_state, message in [
        ("weaver1", "running", "running", "Running"),
        ("weaver2", "running", "running", "Running"),
        ("weaver3", "starting", "starting", "Starting the display"),
        ("weaver4", "failed", None, "The display exited with code 1"),
    ]:
        ws = None
        if ws_state:
            ws = Workspace.objects.create(
                owner=room.students.get(username=student), display=desktop, state=ws_state, progress=40
            )
        seats[student] = Seat.objects.create(
            broadcast=sent,
            student=room.students.get(username=student),
            workspace=ws,
            state=state,
            message=message,
        )
    return room, sent, seats


SHOW = (
    "Object.defineProperty(document, 'visibilityState', {value: '%s', configurable: true});"
    " document.dispatchEvent(new Event('visibilitychange'));"
)


def made_at(url: str) -> int:
    """When the page asked for this picture, by its own clock."""
    return int(parse_qs(urlsplit(url).query)["t"][0])


def publish(seat_id: int) -> None:
    classrooms.publish_seat(Seat.objects.select_related("broadcast", "student", "workspace").get(pk=seat_id))


def test_the_grid_updates_cards_in_place_without_a_thumbnail_flood(page, live_server_url, lesson):
    room, _, seats = lesson
    thumbnails = []
    answered = []
    page.on("request", lambda r: "thumbnail.png" in r.url and thumbnails.append(r.url))
    page.on("requestfinished", lambda r: "thumbnail.png" in r.url and answered.append(r.url))
    page.on("requestfailed", lambda r: "thumbnail.png" in r.url and answered.append(r.url))
    page.clock.install()  # time runs as usual until the test moves it on
    login(page, live_server_url, "teach")
    page.goto(f"{live_server_url}/classrooms/{room.pk}/")
    page.wait_for_selector("#live-indicator.on")
    assert page.locator(".thumb").count() == 4
    assert page.inner_text("#class-summary") == "2 running · 1 starting · 1 failed"
    failed = page.locator(".thumb[data-student=weaver4]")
    assert failed.locator("button.retry").is_visible()
    assert failed.locator(".screen-links").is_hidden()
    # Mark every element: a rebuilt card would lose the mark.
    page.evaluate("() => document.querySelectorAll('.thumb, .thumb img').forEach(e => e.dataset.kept = '1')")
    # Each running screen asks for its picture (within 0.8 s), and asks again
    # only 10 s after the 409 these rows answer.
    until(page, lambda: len(thumbnails) >= 2, "each running screen asks for its picture")
    before = len(thumbnails)

    # A burst of progress from the starting student, as a spawn reports it.
    ws3 = seats["weaver3"].workspace
    for progress in range(41, 81, 2):
        Workspace.objects.filter(pk=ws3.pk).update(progress=progress, message=f"Starting ({progress}%)")
        publish(seats["weaver3"].pk)
    starting = page.locator(".thumb[data-student=weaver3]")
    page.wait_for_function(
        "() => document.querySelector('.thumb[data-student=weaver3] .bar').style.width === '79%'"
    )
    assert len(thumbnails) - before <= 2, f"progress events must not reload pictures: {thumbnails}"
    assert (
        page.evaluate("() => document.querySelectorAll('.thumb[data-kept], .thumb img[data-kept]').length")
        == 8
    )

    # weaver3 reaches running; "stop all" then stops weaver1; nothing is rebuilt.
    Workspace.objects.filter(pk=ws3.pk).update(state="running", progress=100, message="Running")
    Seat.objects.filter(pk=seats["weaver3"].pk).update(state="running", message="Running")
    publish(seats["weaver3"].pk)
    starting.locator(".state.running").wait_for()
    assert starting.locator(".screen-links").is_visible()
    Seat.objects.filter(pk=seats["weaver1"].pk).update(state="stopped", message="Stopped")
    Workspace.objects.filter(pk=seats["weaver1"].workspace_id).update(state="stopped", message="Stopped")
    publish(seats["weaver1"].pk)
    stopped = page.locator(".thumb[data-student=weaver1]")
    stopped.locator(".state.stopped").wait_for()
    assert stopped.locator(".screen-links").is_hidden() and stopped.locator("button.retry").is_hidden()
    page.wait_for_function(
        "() => document.getElementById('class-summary').textContent === '2 running · 1 failed · 1 stopped'"
    )
    assert page.evaluate("() => document.querySelectorAll('.thumb[data-kept]').length") == 4
    screenshot(page, "classroom-grid-states")

    # A hidden tab asks for no pictures at all, for longer than a retry's 10 s
    # (the page's clock, moved on once the pictures asked for have answered,
    # so their retries are due while it is hidden). Each request says when the
    # page made it (?t=, the page's clock), and requests are reported in the
    # order they are made: once a request made afterwards has come, any made
    # while hidden would have come before it.
    hidden_at = page.evaluate(f"() => {{ const at = Date.now(); {SHOW % 'hidden'} return at; }}")
    until(page, lambda: len(answered) == len(thumbnails), "the pictures asked for before answer")
    page.clock.run_for(11_000)
    marker = f"/api/classrooms/{room.pk}/students/weaver2/thumbnail.png?t=0"
    page.evaluate("(url) => fetch(url)", marker)
    until(page, lambda: live_server_url + marker in thumbnails, "the request made afterwards")
    made_while_hidden = [url for url in thumbnails if made_at(url) > hidden_at]
    assert made_while_hidden == [], made_while_hidden
