"""Redis stopped or frozen: requests answer 503 and say so within seconds, never a 500 or a hang.

A real redis-server is started and then killed (nothing listens: "down") or
stopped with SIGSTOP (it accepts connections and never answers: "frozen").
Django and Celery are pointed at it for one test; the run's own Redis is
left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from tests.support.services import free_port, redis_server_command, wait_for_port
from workspaces.lib import redis as lib_redis
from workspaces.lib.outages import REDIS_UNAVAILABLE, RedisUnavailable, redis_outage
from workspaces.models import Classroom, Image

MESSAGE = "Lattice cannot reach its Redis (queue and live updates) just now; try again in a moment."


@contextlib.contextmanager
def redis_at(url: str, settings):
    """Django's Redis clients and Celery's broker at ``url`` for the block."""
    from portal.celery import app

    settings.REDIS_URL = url
    saved = app.conf.broker_url, app._pool, app.amqp._producer_pool
    app.conf.broker_url, app._pool, app.amqp._producer_pool = url, None, None
    try:
        yield
    finally:
        if app._pool is not None:
            app._pool.force_close_all()
        app.conf.broker_url, app._pool, app.amqp._producer_pool = saved
        lib_redis._client_for.cache_clear()


@pytest.fixture
def redis_down(settings):
    port = free_port()  # a Redis that was stopped: nothing listens on its port
    with redis_at(f"redis://127.0.0.1:{port}/0", settings):
        yield


@pytest.fixture
def redis_frozen(settings):
    port = free_port()
    server = subprocess.Popen(redis_server_command(port), stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        os.kill(server.pid, signal.SIGSTOP)  # connections are accepted, nothing is answered
        with redis_at(f"redis://127.0.0.1:{port}/0", settings):
            yield
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(10)


@pytest.fixture
def catalog(db):
    Image.objects.create(slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop")


def launch(client):
    started = time.monotonic()
    response = client.post("/api/workspaces/", {"display": "desktop", "apps": []}, format="json")
    return response, time.monotonic() - started


def assert_redis_503(response) -> None:
    assert response.status_code == 503, response.content[:500]
    assert response.json() == {"detail": MESSAGE, "code": REDIS_UNAVAILABLE}
    assert response["Retry-After"] == "5"


@pytest.mark.django_db(transaction=True)  # the task is queued on commit, inside the request
def test_a_launch_while_redis_is_down_is_a_503_at_once(student, catalog, redis_down):
    response, took = launch(student)
    assert_redis_503(response)
    assert took < 5


@pytest.mark.django_db(transaction=True)
def test_a_launch_while_redis_is_frozen_is_a_503_within_seconds(student, catalog, redis_frozen):
    response, took = launch(student)
    assert_redis_503(response)
    # Broker socket timeouts (3 s) and bounded publish retries: not a hang.
    assert took < 15


@pytest.mark.django_db
def test_a_page_that_needs_redis_answers_a_503_page(client, teacher, redis_down):
    classroom = Classroom.objects.create(name="Maths")
    classroom.teachers.add(teacher)
    client.force_login(teacher)
    response = client.get(f"/classrooms/{classroom.pk}/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    page = response.content.decode()
    assert "Back in a moment" in page and MESSAGE in page
    assert "location.reload()" in page  # a GET tries again by itself


@pytest.mark.django_db
def test_other_server_errors_stay_500(client, teacher, monkeypatch):
    from workspaces.services import teaching

    def broken(classroom):
        raise RuntimeError("a bug")

    monkeypatch.setattr(teaching, "demo_workspace", broken)
    classroom = Classroom.objects.create(name="Maths")
    classroom.teachers.add(teacher)
    client.force_login(teacher)
    client.raise_request_exception = False
    assert client.get(f"/classrooms/{classroom.pk}/").status_code == 500


def test_the_driver_error_behind_another_is_recognised():
    import kombu.exceptions
    import redis.exceptions

    try:
        try:
            raise redis.exceptions.ConnectionError("refused")
        except redis.exceptions.ConnectionError as exc:
            raise RuntimeError("a library's own wrapper") from exc
    except RuntimeError as wrapped:
        assert isinstance(redis_outage(wrapped), RedisUnavailable)
    assert isinstance(redis_outage(kombu.exceptions.OperationalError("timeout")), RedisUnavailable)
    assert redis_outage(redis.exceptions.ResponseError("WRONGTYPE")) is None
    assert redis_outage(ValueError("no")) is None
