"""DockerCatalogOps against a fake docker APIClient: what a build and a pull ask of
Docker, how they stop on time, and how pull progress is reported."""

from __future__ import annotations

import time

import pytest
import urllib3

from workspaces.engine.base import EngineError
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.errors import BuildFailed
from workspaces.engine.names import full_reference, split_reference

INSPECTED = {"Id": "sha256:abc", "Size": 1234, "Config": {"Labels": {"lattice.kind": "app"}}}


class FakeAPI:
    """The few docker.APIClient calls the catalog makes; ``chunks`` is what a build or pull streams."""

    def __init__(self, chunks=(), delay: float = 0, error: BaseException | None = None):
        self.chunks, self.delay, self.error = list(chunks), delay, error
        self.calls: list[tuple[str, dict]] = []
        self.closed = False

    def _stream(self):
        try:
            for chunk in self.chunks:
                time.sleep(self.delay)
                yield chunk
            if self.error:
                time.sleep(self.delay)
                raise self.error
        finally:
            self.closed = True

    def build(self, **kwargs):
        self.calls.append(("build", kwargs))
        return self._stream()

    def pull(self, repository, **kwargs):
        self.calls.append(("pull", {"repository": repository, **kwargs}))
        return self._stream()

    def commit(self, container, **kwargs):
        self.calls.append(("commit", {"container": container, **kwargs}))
        return {"Id": INSPECTED["Id"]}

    def inspect_image(self, reference):
        self.calls.append(("inspect_image", {"reference": reference}))
        return INSPECTED


class FakeClient:
    def __init__(self, api: FakeAPI):
        self.api = api


def engine(api: FakeAPI) -> DockerBackend:
    return DockerBackend(prefix="latticeops", client=FakeClient(api))


def steps(*lines: str) -> list[dict]:
    return [{"stream": line + "\n"} for line in lines]


def test_a_build_gets_memory_cpu_and_time_limits():
    api = FakeAPI(steps("Step 1/1 : FROM lattice/base:latest", " ---> 1234"))
    log: list[str] = []
    built = engine(api).build(b"tar", "p/x:build-1", log.append, memory="768m", cpus=2, timeout=90)
    _, kwargs = api.calls[0]
    assert kwargs["container_limits"] == {
        "memory": 768 * 1024**2,
        "memswap": 768 * 1024**2,  # no swap on top
        "cpusetcpus": "0-1",
    }
    assert kwargs["timeout"] == 90 and kwargs["tag"] == "p/x:build-1" and kwargs["pull"] is False
    assert log == ["Step 1/1 : FROM lattice/base:latest", " ---> 1234"]
    assert built == {"id": "sha256:abc", "size": 1234, "labels": {"lattice.kind": "app"}}


def test_a_failed_step_is_named():
    chunks = [*steps("Step 1/2 : FROM lattice/base:latest", "Step 2/2 : RUN exit 3")]
    chunks.append({"error": "The command '/bin/sh -c exit 3' returned a non-zero code: 3"})
    api = FakeAPI(chunks)
    with pytest.raises(BuildFailed) as failed:
        engine(api).build(b"tar", "p/x:1", lambda line: None)
    assert str(failed.value) == (
        "The build failed at step 2/2 (RUN exit 3): The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    )
    assert failed.value.step == "step 2/2 (RUN exit 3)"


def test_a_build_past_its_deadline_is_stopped_and_the_stream_closed():
    api = FakeAPI(steps(*[f"Step {i}/50 : RUN sleep 1" for i in range(1, 51)]), delay=0.1)
    started = time.monotonic()
    with pytest.raises(BuildFailed) as failed:
        engine(api).build(b"tar", "p/x:1", lambda line: None, timeout=0.35)
    assert time.monotonic() - started < 2
    assert "took longer than 0 s" in str(failed.value) and "step 3/50" in str(failed.value)
    assert api.closed  # the engine sees the hang-up and cancels the build


def test_a_silent_step_ends_by_the_read_timeout_with_the_same_message():
    silent = urllib3.exceptions.ReadTimeoutError(None, "/build", "Read timed out.")
    api = FakeAPI(steps("Step 1/2 : RUN sleep 1000"), delay=0.2, error=silent)
    with pytest.raises(BuildFailed) as failed:
        engine(api).build(b"tar", "p/x:1", lambda line: None, timeout=0.3)
    assert "took longer than" in str(failed.value) and "step 1/2 (RUN sleep 1000)" in str(failed.value)


def test_a_connection_broken_early_is_an_engine_error_not_a_crash():
    api = FakeAPI(steps("Step 1/2 : RUN x"), error=urllib3.exceptions.ProtocolError("reset"))
    with pytest.raises(EngineError, match="broke off"):
        engine(api).build(b"tar", "p/x:1", lambda line: None, timeout=60)


def layer(layer_id: str, status: str, current: int | None = None, total: int | None = None) -> dict:
    event = {"id": layer_id, "status": status}
    if total:
        event["progressDetail"] = {"current": current, "total": total}
    return event


def test_pull_progress_never_goes_back_when_a_layer_shows_up_late():
    events = [
        {"id": "1", "status": "Pulling from course/app"},  # the tag, not a layer
        layer("a", "Pulling fs layer"),
        layer("a", "Downloading", 90, 100),
        layer("a", "Download complete"),
        layer("a", "Extracting", 100, 100),
        layer("a", "Pull complete"),
        layer("b", "Pulling fs layer"),  # a second layer, announced late: the share of "a" halves
        layer("b", "Downloading", 50, 100),
        layer("b", "Pull complete"),
        {"status": "Status: Downloaded newer image for 127.0.0.1:5000/course/app:1"},
    ]
    api = FakeAPI(events)
    seen: list[int] = []
    engine(api).pull("127.0.0.1:5000/course/app:1", lambda p, m: seen.append(p))
    assert seen == sorted(seen), seen
    assert seen[-1] == 100 and any(0 < p < 100 for p in seen)
    assert api.calls[0][1]["repository"] == "127.0.0.1:5000/course/app:1"


def test_a_digest_reference_is_pulled_and_inspected_as_a_digest():
    digest = "sha256:" + "ab" * 32
    api = FakeAPI([layer("a", "Already exists")])
    engine(api).pull(f"127.0.0.1:5000/course/app@{digest}", lambda p, m: None)
    assert api.calls[0][1]["repository"] == f"127.0.0.1:5000/course/app@{digest}"
    assert api.calls[-1] == ("inspect_image", {"reference": f"127.0.0.1:5000/course/app@{digest}"})


def test_a_pull_past_its_deadline_stops():
    api = FakeAPI([layer("a", "Downloading", i, 100) for i in range(1, 100)], delay=0.05)
    with pytest.raises(EngineError, match="took longer than"):
        engine(api).pull("r:5000/a:1", lambda p, m: None, timeout=0.2)


@pytest.mark.parametrize(
    ("reference", "split", "full"),
    [
        ("course/app", ("course/app", "latest"), "course/app:latest"),
        (
            "127.0.0.1:5000/course/app",
            ("127.0.0.1:5000/course/app", "latest"),
            "127.0.0.1:5000/course/app:latest",
        ),
        (
            "127.0.0.1:5000/course/app:3.12",
            ("127.0.0.1:5000/course/app", "3.12"),
            "127.0.0.1:5000/course/app:3.12",
        ),
        (
            "r:5000/app@sha256:" + "0" * 64,
            ("r:5000/app", "sha256:" + "0" * 64),
            "r:5000/app@sha256:" + "0" * 64,
        ),
        (
            "r:5000/app:1@sha256:" + "0" * 64,
            ("r:5000/app", "sha256:" + "0" * 64),
            "r:5000/app@sha256:" + "0" * 64,
        ),
    ],
)
def test_references_are_split_at_the_right_colon(reference, split, full):
    assert split_reference(reference) == split
    assert full_reference(reference) == full


def test_a_commit_to_a_registry_with_a_port_is_tagged_latest():
    api = FakeAPI()
    saved = engine(api).commit("w1", "ide", "127.0.0.1:5000/course/python", {"lattice.kind": "app"})
    _, kwargs = api.calls[0]
    assert (kwargs["repository"], kwargs["tag"]) == ("127.0.0.1:5000/course/python", "latest")
    assert saved["reference"] == "127.0.0.1:5000/course/python"
