"""The disk watch with the engine's measure scripted: who is stopped, with what message.

The end-to-end test (test_disk_watch_e2e.py) fills a real container; these
cover the rules: the limit per image, what is left alone, the limit's sources.
"""

from __future__ import annotations

import pytest

from tests.support.fakes import use_engine
from workspaces import tasks
from workspaces.engine.base import ContainerDisk
from workspaces.engine.docker_backend import DockerBackend
from workspaces.lib.redis import redis_client
from workspaces.models import Image, Workspace
from workspaces.services import disk_watch, lifecycle
from workspaces.services.catalog import fields_from_labels

pytestmark = pytest.mark.django_db

MB = 1024**2


class MeasuredEngine(DockerBackend):
    """The real backend, with the containers' disk use and stops answered from a script."""

    written: list[ContainerDisk] = []

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stopped: list[str] = []
        self.asked: list[tuple[float | None, set[str]]] = []

    def container_disk_usage(self, seconds: float | None = None, first=()) -> list[ContainerDisk]:
        self.asked.append((seconds, set(first)))
        return list(self.written)

    def stop(self, workspace_id: str) -> None:
        self.stopped.append(workspace_id)

    def containers(self, workspace_id: str) -> list:
        return []


@pytest.fixture
def engine(settings):
    return use_engine(settings, MeasuredEngine)


@pytest.fixture
def images(db) -> tuple[Image, Image]:
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop", disk_limit="1g"
    )
    ide = Image.objects.create(
        slug="ide", reference="lattice/ide:latest", kind="app", title="IDE", disk_limit="20m"
    )
    return desktop, ide


@pytest.fixture
def announced(monkeypatch) -> list[dict]:
    """The stop task runs here when queued; what it announces is kept."""
    events: list[dict] = []
    monkeypatch.setattr(tasks.stop_workspace, "delay", lambda *args: tasks.stop_workspace(*args))
    monkeypatch.setattr(tasks.back_up, "delay", lambda *args: None)
    monkeypatch.setattr(lifecycle, "publish", lambda user_id, event: events.append(event))
    return events


@pytest.fixture
def watch(announced, django_capture_on_commit_callbacks):
    """One pass of the beat task, with what it queues once committed run too."""

    def run() -> list[int]:
        with django_capture_on_commit_callbacks(execute=True):
            return tasks.watch_disks()

    return run


def running_workspace(owner, images, state: str = "running") -> Workspace:
    desktop, ide = images
    ws = lifecycle.create_workspace(owner, desktop, [ide])
    Workspace.objects.filter(pk=ws.pk).update(state=state)
    ws.refresh_from_db()
    return ws


def test_a_workspace_whose_container_wrote_past_its_limit_is_stopped_with_a_message(
    engine, owner, images, watch, announced
):
    ws = running_workspace(owner, images)
    MeasuredEngine.written = [
        ContainerDisk(ws.engine_id, "display", 300 * MB),  # under the desktop's 1 GB
        ContainerDisk(ws.engine_id, "ide", 42 * MB),  # over the IDE's 20 MB
    ]

    assert watch() == [ws.pk]

    ws.refresh_from_db()
    expected = (
        "Stopped: the IDE container wrote 42 MB outside /data, over its 20 MB limit. "
        "Delete files you do not need, or save your work in /data."
    )
    assert (ws.state, ws.message) == ("stopped", expected)
    assert engine.stopped == [ws.engine_id]
    # The user's pages hear it: the last event about the workspace carries the reason.
    assert announced[-1]["state"] == "stopped" and announced[-1]["message"] == expected


def test_workspaces_within_their_limits_or_not_running_are_left_alone(engine, owner, images, watch):
    within = running_workspace(owner, images)
    stopped = running_workspace(owner, images, state="stopped")
    MeasuredEngine.written = [
        ContainerDisk(within.engine_id, "display", 1024 * MB),  # exactly the limit is allowed
        ContainerDisk(within.engine_id, "ide", 19 * MB),
        ContainerDisk(stopped.engine_id, "ide", 900 * MB),
        ContainerDisk("not-in-the-database", "ide", 900 * MB),
    ]

    assert watch() == []
    assert engine.stopped == []
    assert {w.state for w in Workspace.objects.all()} == {"running", "stopped"}


def test_a_pass_still_measuring_makes_the_next_one_skip(engine, owner, images, watch):
    ws = running_workspace(owner, images)
    MeasuredEngine.written = [ContainerDisk(ws.engine_id, "ide", 42 * MB)]
    held = redis_client().lock(disk_watch.LOCK, timeout=30)
    assert held.acquire(blocking=False)
    try:
        assert watch() == []
    finally:
        held.release()
    assert watch() == [ws.pk]


def test_a_container_the_engine_cannot_measure_twice_in_a_row_is_stopped(engine, owner, images, watch):
    ws = running_workspace(owner, images)
    for key in redis_client().keys(disk_watch.UNMEASURED + "*"):
        redis_client().delete(key)
    unmeasured = [ContainerDisk(ws.engine_id, "ide", None)]
    measured = [ContainerDisk(ws.engine_id, "ide", 1 * MB)]
    # Once is the engine being slow; a measure in between starts the count again.
    for usage in (unmeasured, measured, unmeasured):
        MeasuredEngine.written = usage
        assert watch() == []
    MeasuredEngine.written = unmeasured
    assert watch() == [ws.pk]
    ws.refresh_from_db()
    assert ws.state == "stopped"
    assert ws.message.startswith("Stopped: the IDE container's files outside /data could not be measured")


def test_a_pass_has_a_deadline_and_the_containers_it_did_not_reach_come_first_next_time(
    engine, owner, images, watch
):
    ws = running_workspace(owner, images)
    redis_client().delete(disk_watch.NOT_REACHED)
    # The pass's deadline came before the IDE's measure: not judged (not even
    # as unmeasured, however many passes in a row), and measured first next pass.
    MeasuredEngine.written = [
        ContainerDisk(ws.engine_id, "display", 1 * MB),
        ContainerDisk(ws.engine_id, "ide", None, complete=False, reached=False),
    ]
    for _ in range(disk_watch.UNMEASURED_PASSES + 1):
        assert watch() == []
    assert engine.stopped == []
    assert engine.asked[0] == (disk_watch.PASS_SECONDS, set())
    assert engine.asked[1] == (disk_watch.PASS_SECONDS, {f"{ws.engine_id}:ide"})
    # Reached and over its limit: stopped as ever; nothing is left for the next pass.
    MeasuredEngine.written = [ContainerDisk(ws.engine_id, "ide", 42 * MB)]
    assert watch() == [ws.pk]
    assert not redis_client().exists(disk_watch.NOT_REACHED)


def test_a_measure_cut_short_stops_only_once_it_is_already_over_the_limit(engine, owner, images, watch):
    """A walk stopped at its bound (a student's million files) reports a lower bound."""
    for key in redis_client().keys(disk_watch.UNMEASURED + "*"):
        redis_client().delete(key)
    over = running_workspace(owner, images)
    under = running_workspace(owner, images)
    MeasuredEngine.written = [
        ContainerDisk(over.engine_id, "ide", 42 * MB, complete=False),  # at least 42 MB: over 20 MB
        ContainerDisk(under.engine_id, "ide", 5 * MB, complete=False),  # at least 5 MB: unknown
    ]

    assert watch() == [over.pk]
    over.refresh_from_db()
    assert over.message.startswith(
        "Stopped: the IDE container wrote at least 42 MB outside /data, over its 20 MB"
    )
    # Cut short under the limit is unmeasured: the second pass in a row stops it.
    MeasuredEngine.written = MeasuredEngine.written[1:]
    assert watch() == [under.pk]
    under.refresh_from_db()
    assert under.message.startswith("Stopped: the IDE container's files outside /data could not be measured")


def test_sizes_read_as_the_catalog_writes_them():
    assert disk_watch.size_bytes("4g") == 4 * 1024**3
    assert disk_watch.size_bytes("512m") == 512 * MB
    assert disk_watch.size_bytes("100K") == 100 * 1024
    assert disk_watch.size_bytes("123") == 123
    with pytest.raises(ValueError, match="not a size"):
        disk_watch.size_bytes("4 GB")
    assert disk_watch.readable(int(4.2 * 1024**3)) == "4.2 GB"
    assert disk_watch.readable(20 * MB) == "20 MB"


def test_the_limit_comes_from_the_images_label_unless_the_admin_gives_one():
    assert fields_from_labels({"lattice.disk_limit": "8g"}, "x")["disk_limit"] == "8g"
    assert fields_from_labels({}, "x")["disk_limit"] == "4g"
    assert fields_from_labels({"lattice.disk_limit": "8g"}, "x", {"disk_limit": "2g"})["disk_limit"] == "2g"


def test_admins_set_the_disk_limit_and_a_useless_one_is_refused(api_client, admin_user, images):
    desktop, _ = images
    api_client.force_authenticate(admin_user)
    url = f"/api/admin/images/{desktop.pk}/"
    for bad in ("0", "5m", "lots"):
        response = api_client.patch(url, {"disk_limit": bad}, format="json")
        assert response.status_code == 400, bad
        assert "at least 10m" in str(response.json())
    response = api_client.patch(url, {"disk_limit": "2g"}, format="json")
    assert response.status_code == 200 and response.json()["disk_limit"] == "2g"
    desktop.refresh_from_db()
    assert desktop.disk_limit == "2g"


def test_a_useless_disk_limit_label_is_refused_naming_the_label():
    with pytest.raises(ValueError, match=r"the image's label lattice.disk_limit: A disk limit is a size"):
        fields_from_labels({"lattice.disk_limit": "0"}, "x")


def test_the_admin_page_sets_the_disk_limit(client, admin_user, images):
    desktop, _ = images
    client.force_login(admin_user)
    form = {"title": "Desktop", "mem_limit": "1g", "cpus": "1", "pids_limit": "256", "enabled": "on"}
    answer = client.post(f"/manage/images/{desktop.pk}/", {**form, "disk_limit": "1m"}, follow=True)
    assert "at least 10m" in answer.content.decode()
    desktop.refresh_from_db()
    assert desktop.disk_limit == "1g"
    client.post(f"/manage/images/{desktop.pk}/", {**form, "disk_limit": "6g"})
    desktop.refresh_from_db()
    assert desktop.disk_limit == "6g"
    assert 'name="disk_limit" value="6g"' in client.get(f"/manage/images/{desktop.pk}/").content.decode()
