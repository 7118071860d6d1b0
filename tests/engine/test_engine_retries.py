"""The Docker backend rides out an engine that stumbles, and says so plainly when it stays down.

The real backend over a stand-in for docker-py's low-level client that fails
the way an engine under load does: HTTP 500s, read timeouts, refused
connections. No containers are made here.
"""

from __future__ import annotations

import docker.errors
import pytest
import requests

from workspaces.engine import retries
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.docker_common import LABEL_ROLE, LABEL_WORKSPACE
from workspaces.engine.errors import EngineError, EngineUnavailable


def server_error(status: int = 500) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("engine trouble", response=response, explanation="engine trouble")


class StumblingApi:
    """docker-py's APIClient as far as the tested calls go: the first ``failures`` raise ``error``."""

    def __init__(self, error: BaseException, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    def containers(self, all: bool, filters: dict) -> list[dict]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return [
            {"Id": "c1", "State": "running", "Labels": {LABEL_ROLE: "display", LABEL_WORKSPACE: "w1"}},
        ]


class StubClient:
    def __init__(self, api: StumblingApi) -> None:
        self.api = api


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    waits: list[float] = []
    real = retries.pause
    monkeypatch.setattr(retries, "pause", lambda attempt: waits.append(real(attempt)) or 0.0)
    return waits


def backend(api: StumblingApi, tmp_path) -> DockerBackend:
    return DockerBackend(prefix="retrytest", client=StubClient(api), socket_root=str(tmp_path))


@pytest.mark.parametrize(
    "error",
    [
        server_error(500),
        server_error(503),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectionError("connection refused"),
    ],
    ids=["500", "503", "read-timeout", "refused"],
)
def test_a_stumble_is_tried_again_and_the_call_succeeds(error, tmp_path, no_pauses):
    api = StumblingApi(error, failures=2)
    assert backend(api, tmp_path).poll("w1") == "running"
    assert api.calls == 3
    # Growing pauses between the tries, each within its cap (full jitter).
    assert len(no_pauses) == 2
    assert 0 <= no_pauses[0] <= retries.FIRST_PAUSE and 0 <= no_pauses[1] <= 2 * retries.FIRST_PAUSE


def test_an_engine_that_stays_down_gives_a_message_to_act_on(tmp_path):
    api = StumblingApi(server_error(500), failures=10**6)
    with pytest.raises(EngineUnavailable) as raised:
        backend(api, tmp_path).poll("w1")
    assert api.calls == retries.ATTEMPTS
    message = str(raised.value)
    assert message.startswith("The Docker engine did not answer (")
    assert "Listing containers: engine trouble" in message
    assert message.endswith("try again in a moment.")


def test_a_refusal_is_not_tried_again(tmp_path):
    api = StumblingApi(server_error(409), failures=10**6)
    with pytest.raises(EngineError) as raised:
        backend(api, tmp_path).list_workspaces()
    assert api.calls == 1
    assert not isinstance(raised.value, EngineUnavailable)


def test_pauses_grow_and_stay_under_the_cap():
    for attempt in range(1, 10):
        assert 0 <= retries.pause(attempt) <= min(retries.MAX_PAUSE, retries.FIRST_PAUSE * 2 ** (attempt - 1))


def test_transient_knows_the_engine_error_behind_an_engine_error():
    try:
        try:
            raise server_error(502)
        except docker.errors.APIError as exc:
            raise EngineError("Stopping the workspace: bad gateway") from exc
    except EngineError as wrapped:
        assert retries.transient(wrapped)
    assert not retries.transient(EngineError("a refusal of our own"))
    assert not retries.transient(server_error(404))
