"""Shared fixtures: people, and the real processes end-to-end tests talk to.

Three people, as in every test that checks access: the owner, a teammate in
the same class, and a stranger who must see nothing.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from tests.support.services import ARTIFACTS, Process, free_port, wait_for_port

PASSWORD = "correct horse battery"


@pytest.fixture
def make_user(db):
    from workspaces.models import User

    def make(username: str, role: str = "student", password: str = PASSWORD) -> User:
        return User.objects.create_user(username=username, password=password, role=role)

    return make


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def teammate(make_user):
    return make_user("teammate")


@pytest.fixture
def stranger(make_user):
    return make_user("stranger")


@pytest.fixture
def teacher(make_user):
    return make_user("teach", role="teacher")


@pytest.fixture
def admin_user(make_user):
    return make_user("boss", role="admin")


@pytest.fixture(autouse=True)
def _fresh_engine():
    """Each test starts with the engine its settings name: no fake outlives its test."""
    from workspaces.lib.engine_access import backend

    backend.cache_clear()
    yield
    backend.cache_clear()


@pytest.fixture
def student(api_client, owner):
    """An API client signed in as the owner (a student)."""
    api_client.force_authenticate(owner)
    return api_client


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


def _database_env() -> dict[str, str]:
    """Point a child process at the test database this run created."""
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return {"LATTICE_SQLITE_PATH": str(settings["NAME"])}
    parts = urlsplit(os.environ["DATABASE_URL"])
    return {"DATABASE_URL": urlunsplit(parts._replace(path="/" + settings["NAME"]))}


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="portal.settings")
    env.update(_database_env())
    env.update(extra)
    return env


def start_worker(name: str, env: dict[str, str], *options: str) -> Process:
    """A real Celery worker (threads, as `make run` runs it), once it is ready for tasks."""
    worker = Process(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--loglevel",
            "INFO",
            "--pool",
            "threads",
            "--without-gossip",
            "--without-mingle",
            *options,
        ],
        env,
    )
    worker.wait_for_log("ready.")
    return worker


def start_web(name: str, port: int, env: dict[str, str]) -> Process:
    """The real ASGI app (pages, API, websockets) under uvicorn, as `make run` serves it."""
    server = Process(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "portal.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "off",
        ],
        env,
    )
    wait_for_port(port, timeout=30)
    return server


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker):
    """A real Celery worker on the test Redis and the test database."""
    with django_db_blocker.unblock():
        env = _child_env()
    worker = start_worker("celery-worker", env, "--concurrency", "8", "--hostname", "test@%h")
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def live_server_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def live_server_url(django_db_setup, django_db_blocker, live_server_port, display_proxy_url):
    """The real ASGI app (pages, API, websockets) under uvicorn, as `make run` serves it."""
    port = live_server_port
    with django_db_blocker.unblock():
        env = _child_env(LATTICE_DISPLAY_PROXY_URL=display_proxy_url)
    server = start_web("uvicorn", port, env)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def browser(django_db_setup):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, which
    # Django would take for async code; our ORM calls here are synchronous.
    # Module scope: the loop must be gone before async tests in other modules.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.fail(f"Chromium not found at {executable}: run `make test` (it installs Debian's chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser, request):
    """A browser tab; its console and its last picture are kept as test artefacts."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{request.node.name}-console.log").write_text("\n".join(console))
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"))
    context.close()


# Transitions and animations that end (a progress bar's width) have ended;
# endless ones (a spinner) never would.
SETTLED = """() => document.getAnimations().every(
    (a) => a.playState !== "running" || a.effect?.getComputedTiming().endTime === Infinity)"""


def screenshot(page, name: str) -> Path:
    """The whole page as a person would see it scrolled to the top (the top bar sticks),
    once what moves has come to rest."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function(SETTLED, timeout=10000)
    page.screenshot(path=str(path), full_page=True)
    return path


def until(page, condition, what: str, timeout: float = 10) -> None:
    """Poll ``condition`` (a Python callable) while the page's events come in."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        page.wait_for_timeout(50)


def start_display_proxy(name: str, origins: str, port: int | None = None, **env: str) -> tuple[Process, str]:
    """A real display proxy (websockify + our token plugin) on ``port`` (a free one by default), and its URL."""
    port = port or free_port()
    proxy = Process(
        name,
        [
            sys.executable,
            "-m",
            "workspaces.display.proxy",
            "--listen",
            f"127.0.0.1:{port}",
            "--redis",
            os.environ["REDIS_URL"],
            "--origins",
            origins,
        ],
        dict(os.environ, **env),
    )
    wait_for_port(port)
    return proxy, f"ws://127.0.0.1:{port}/"


@pytest.fixture(scope="session")
def display_proxy_url(live_server_port):
    """The session's display proxy, with the default limits."""
    proxy, url = start_display_proxy("display-proxy", f"{TEST_ORIGIN} http://127.0.0.1:{live_server_port}")
    yield url
    proxy.stop()


TEST_ORIGIN = "http://testserver"


@pytest.fixture
def engine(settings, display_proxy_url, celery_worker_process):
    """The real engine with the proxy and a worker; every test workspace is removed afterwards."""
    from workspaces.lib.engine_access import backend
    from workspaces.services.catalog import sync_from_engine

    settings.LATTICE_DISPLAY_PROXY_URL = display_proxy_url
    sync_from_engine()
    yield backend()
    for workspace_id in backend().list_workspaces():
        backend().remove(workspace_id)
    # Test users' data volumes go too (the portal itself never deletes one):
    # usernames repeat from test to test, their files must not.
    volumes = subprocess.run(
        [
            "docker",
            "volume",
            "ls",
            "-q",
            "--filter",
            f"label=lattice.prefix={settings.LATTICE_ENGINE_PREFIX}",
            "--filter",
            "label=lattice.role=data",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if volumes:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True, check=False)


# --- the chaos suite (tests/chaos, make test-chaos): only with --chaos, and then alone ---


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "the chaos suite (make test-chaos)")
    group.addoption(
        "--chaos", action="store_true", help="run the chaos suite (tests marked chaos) and nothing else"
    )
    group.addoption(
        "--chaos-seed",
        type=int,
        default=None,
        help="the rounds' seed (default: LATTICE_CHAOS_SEED, else random)",
    )
    group.addoption("--chaos-rounds", type=int, default=6, help="how many rounds of kills (default 6)")


def pytest_configure(config: pytest.Config) -> None:
    # One seed for the whole run, chosen before any test, so the header can say it.
    if config.getoption("chaos_seed") is None:
        seed = os.environ.get("LATTICE_CHAOS_SEED")
        config.option.chaos_seed = int(seed) if seed else random.SystemRandom().randrange(1_000_000)


def pytest_report_header(config: pytest.Config) -> str | None:
    if not config.getoption("chaos"):
        return None
    return (
        f"chaos seed: {config.getoption('chaos_seed')}, rounds: {config.getoption('chaos_rounds')} "
        f"(again: --chaos-seed {config.getoption('chaos_seed')})"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The chaos suite kills processes and takes minutes: it runs under --chaos, and alone.

    The tests left out are reported as deselected, so a run that keeps none
    ends with "no tests ran" (exit 5), which scripts/test and scripts/test-chaos fail on.
    """
    chaos = config.getoption("chaos")
    kept = [item for item in items if (item.get_closest_marker("chaos") is not None) == chaos]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
