"""A person's view: Debian's Chromium, driven by Playwright, against the real server."""

import pytest

from tests.conftest import PASSWORD, screenshot, until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def login(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_student_logs_in_and_sees_the_dashboard(page, live_server_url, make_user, celery_worker_process):
    make_user("ada")
    page.goto(f"{live_server_url}/login/")
    screenshot(page, "login")
    login(page, live_server_url, "Ada")
    page.wait_for_url(f"{live_server_url}/student/")
    assert page.inner_text("h1") == "Hello, ada"
    # The live-events socket connects (the dot turns green) ...
    page.wait_for_selector("#live-indicator.on", timeout=10000)
    # ... and a background job's progress reaches the page.
    page.click("#run-diagnostics")
    page.wait_for_selector(
        "#diagnostics .step:has-text('Everything Lattice needs is reachable')", timeout=30000
    )
    assert page.locator("#diagnostics .results li.ok").count() == 4
    shot = screenshot(page, "student-dashboard")  # once the bar's width transition is over
    assert shot.stat().st_size > 10_000


def test_wrong_password_is_shown(page, live_server_url, make_user):
    make_user("bob")
    page.goto(f"{live_server_url}/login/")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "do not match" in page.inner_text("[role=alert]")


VIEWPORTS = {"tablet-portrait": (768, 1024), "tablet-landscape": (1024, 768), "laptop": (1280, 800)}
DASHBOARDS = {"student": "/student/", "teacher": "/teacher/", "admin": "/manage/"}

# Wider than the viewport, or sticking out of its card: both look broken.
OVERFLOW = """() => {
  const visible = (e) => e.offsetParent !== null || getComputedStyle(e).position === "fixed";
  const sticking = [];
  for (const card of document.querySelectorAll(".card, .topbar")) {
    const edge = card.getBoundingClientRect().right;
    for (const e of card.querySelectorAll("*")) {
      // Inside a card that scrolls sideways, wide content is reachable, not cut off.
      const scrolls = getComputedStyle(card).overflowX !== "visible";
      const out = (x) => !scrolls && visible(x) && x.getBoundingClientRect().right > edge + 1;
      if (out(e) && !out(e.parentElement)) {
        sticking.push(`${e.tagName.toLowerCase()}.${e.className} in ${card.id || card.className}`);
      }
    }
  }
  return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth, sticking};
}"""


def _fits_the_width(page, where: str) -> None:
    found = page.evaluate(OVERFLOW)
    assert found["scroll"] <= found["inner"], (where, found)
    assert found["sticking"] == [], (where, found)


def _fill_the_pages(make_user, viewport: str) -> None:
    """A catalog, a classroom: pages with content, where tables and forms grow wide."""
    from workspaces.models import Classroom, Image

    for slug, kind, title in [
        ("desktop", "display", "Desktop with a panel"),
        ("ide", "app", "IDE (code editor and terminal)"),
        ("office", "app", "Office suite"),
    ]:
        Image.objects.get_or_create(
            slug=slug,
            defaults={
                "reference": f"lattice/{slug}:latest",
                "kind": kind,
                "title": title,
                "description": "A description as long as an administrator would write for it.",
            },
        )
    classroom = Classroom.objects.create(name=f"Python 101 — Tuesday afternoon ({viewport})")
    classroom.teachers.add(make_user(f"teacher-{viewport}", role="teacher"))
    classroom.students.add(*(make_user(f"s{n}-{viewport}") for n in range(3)))


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_pages_fit_laptops_and_tablets(browser, live_server_url, make_user, viewport):
    """Login page and each role's dashboard: a screenshot each, and nothing wider than the screen."""
    _fill_the_pages(make_user, viewport)
    width, height = VIEWPORTS[viewport]
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.goto(f"{live_server_url}/login/")
        screenshot(page, f"login-{viewport}")
        _fits_the_width(page, "login")
        assert page.locator("button[type=submit]").is_visible()
        for role, path in DASHBOARDS.items():
            username = f"{role}-{viewport}"
            if role != "teacher":
                make_user(username, role=role)
            login(page, live_server_url, username)
            page.wait_for_url(f"{live_server_url}{path}")
            page.wait_for_selector("#live-indicator.on", timeout=10000)
            page.wait_for_load_state("networkidle")
            shot = screenshot(page, f"{role}-dashboard-{viewport}")
            assert shot.stat().st_size > 10_000
            _fits_the_width(page, role)
            # The way out stays on screen at every width.
            assert page.get_by_role("button", name="Sign out").is_visible()
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(f"{live_server_url}/login/")
    finally:
        context.close()


def test_the_browser_sees_4401_when_signed_out_and_events_js_stops(page, live_server_url):
    page.clock.install()  # time runs as usual until the test moves it on
    page.goto(f"{live_server_url}/login/")
    code = page.evaluate(
        """() => new Promise((resolve) => {
             const socket = new WebSocket(`ws://${location.host}/ws/events/`);
             socket.addEventListener("close", (closed) => resolve(closed.code));
           })"""
    )
    assert code == 4401
    # events.js on a page whose session is gone: one try, then no reconnecting.
    # Every socket of the page counts its "close" before events.js hears it.
    page.evaluate(
        """() => {
             window.closedSockets = 0;
             const Native = WebSocket;
             window.WebSocket = class extends Native {
               constructor(...args) {
                 super(...args);
                 this.addEventListener("close", () => window.closedSockets++);
               }
             };
           }"""
    )
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.add_script_tag(url="/static/js/events.js", type="module")
    page.wait_for_function("() => window.closedSockets === 1")  # events.js has had its 4401
    page.clock.run_for(4_000)  # reconnects would come after 0.5, 1 and 2 s
    # A socket opened now is reported after any that a reconnect opened before it.
    events = live_server_url.replace("http", "ws") + "/ws/events/"
    with page.expect_websocket(lambda socket: socket.url == events + "?after"):
        page.evaluate("() => { new WebSocket(`ws://${location.host}/ws/events/?after`); }")
    assert sockets == [events, events + "?after"]


def test_events_js_pings_every_25_seconds(page, live_server_url, make_user):
    from workspaces.lib.events import publish

    pinger = make_user("pinger")
    page.clock.install()
    frames = []
    page.on(
        "websocket",
        lambda socket: (
            socket.on("framesent", lambda payload: frames.append(("sent", payload))),
            socket.on("framereceived", lambda payload: frames.append(("received", payload))),
        ),
    )
    login(page, live_server_url, "pinger")
    page.wait_for_url(f"{live_server_url}/student/")
    page.wait_for_selector("#live-indicator.on", timeout=10000)
    page.clock.run_for(24_000)
    # An event sent now arrives on the same socket after any ping sent before.
    publish(pinger.pk, {"type": "marker"})
    until(page, lambda: any(kind == "received" and "marker" in data for kind, data in frames), "the marker")
    assert ("sent", '{"type":"ping"}') not in frames
    page.clock.run_for(1_500)
    until(page, lambda: ("received", '{"type": "pong"}') in frames, "a pong")
    assert frames.count(("sent", '{"type":"ping"}')) == 1
    assert page.locator("#live-indicator.on").count() == 1
