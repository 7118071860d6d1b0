"""Backups of data volumes to object storage, with a fake engine holding volumes in memory."""

from __future__ import annotations

import io
import tarfile
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.support.fakes import use_engine
from workspaces import tasks
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.specs import Endpoint
from workspaces.lib.object_store import LocalFolderStore, StoreError, store
from workspaces.models import DataSnapshot, Image, User, Workspace
from workspaces.services import backups, lifecycle

pytestmark = pytest.mark.django_db


def tar_of(top_mtime: float = 1_700_000_000, **files: bytes) -> bytes:
    """A volume's files as the engine exports them: a tar with "." first."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        top = tarfile.TarInfo(".")
        top.type, top.mtime = tarfile.DIRTYPE, top_mtime
        archive.addfile(top)
        for name, content in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.uid, info.mtime = len(content), 1000, 1_700_000_000
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


class VolumesInMemory(DockerBackend):
    """The real backend with data volumes as bytes in a dict, and starts that only record.

    The engine names volumes by user id; the dict says whose by username, so
    that tests read plainly."""

    volumes: dict[str, bytes] = {}
    started: list[str] = []
    unfinished: set[str] = set()  # volumes whose import was cut short: they still have the marker

    @staticmethod
    def name(owner_id: int) -> str:
        return User.objects.get(pk=owner_id).username

    def data_volume_exists(self, owner_id):
        return self.name(owner_id) in self.volumes and self.name(owner_id) not in self.unfinished

    def export_data(self, owner_id, out):
        out.write(self.volumes[self.name(owner_id)])

    def import_data(self, owner_id, tar, migrated_from=""):
        self.unfinished.add(self.name(owner_id))
        self.volumes[self.name(owner_id)] = tar.read()
        self.unfinished.discard(self.name(owner_id))

    def legacy_data_volumes(self):
        return []

    def start(self, spec, progress=None, timeout=60):
        assert self.name(spec.owner_id) == spec.owner
        self.started.append(spec.owner)
        self.volumes.setdefault(spec.owner, tar_of())  # a start makes an empty volume when there is none
        return Endpoint(path="/s/vnc.sock", container_id="c0ffee", server_pid=4242)


@pytest.fixture
def engine(settings, tmp_path):
    settings.LATTICE_OBJECT_STORAGE = str(tmp_path / "objects")
    store.cache_clear()
    VolumesInMemory.volumes, VolumesInMemory.started, VolumesInMemory.unfinished = {}, [], set()
    yield use_engine(settings, VolumesInMemory)
    store.cache_clear()


def stored(user) -> bytes:
    out = io.BytesIO()
    store().get(user.snapshots.first().key, out)
    return out.getvalue()


def objects() -> list[str]:
    return [o.key for o in store().list("data/")]


def test_a_backup_stores_the_volume_and_an_unchanged_one_stores_nothing(owner, engine):
    engine.volumes["owner"] = tar_of(notes=b"my files")
    first = backups.back_up(owner, "asked")
    assert (first.size, first.reason) == (len(engine.volumes["owner"]), "asked")
    assert objects() == [first.key] and first.key.startswith(f"data/u-{owner.pk}/")  # by id, as the volume
    out = io.BytesIO()
    store().get(first.key, out)
    assert out.getvalue() == engine.volumes["owner"]

    # The same files, the top folder written to meanwhile: nothing new to keep.
    engine.volumes["owner"] = tar_of(notes=b"my files", top_mtime=1_800_000_000)
    again = backups.back_up(owner, "schedule")
    assert again.pk == first.pk and again.checked > first.checked
    assert objects() == [first.key]

    engine.volumes["owner"] = tar_of(notes=b"my changed files")
    changed = backups.back_up(owner, "stopped")
    assert changed.pk != first.pk and len(objects()) == 2


def test_only_the_newest_backups_are_kept(owner, engine, settings):
    settings.LATTICE_BACKUPS_KEPT = 2
    for n in range(4):
        engine.volumes["owner"] = tar_of(notes=f"version {n}".encode())
        backups.back_up(owner, "schedule")
    kept = list(owner.snapshots.all())
    assert len(kept) == 2 and len(objects()) == 2
    assert set(objects()) == {s.key for s in kept}
    out = io.BytesIO()
    store().get(kept[0].key, out)
    assert out.getvalue() == engine.volumes["owner"]  # the newest is version 3


def test_a_missing_volume_gets_the_newest_backup(owner, engine):
    engine.volumes["owner"] = tar_of(work=b"precious")
    backups.back_up(owner, "stopped")
    del engine.volumes["owner"]  # a new engine host
    steps = []
    restored = backups.restore_if_missing(owner, lambda p, m: steps.append(m))
    assert restored is not None and engine.volumes["owner"] == stored(owner)
    assert steps and steps[0].startswith("Restoring your files")
    assert backups.restore_if_missing(owner) is None  # it is there now: nothing to do


def test_a_restore_cut_short_is_restored_again_and_never_backed_up(owner, engine, settings):
    settings.LATTICE_BACKUPS_KEPT = 1
    engine.volumes["owner"] = tar_of(work=b"precious", more=b"files")
    good = backups.back_up(owner, "stopped")
    # What a worker killed mid-restore leaves: half the files, and the marker.
    engine.volumes["owner"] = tar_of(work=b"precious")
    engine.unfinished.add("owner")
    assert backups.back_up(owner, "schedule") is None  # the half is not recorded...
    assert objects() == [good.key]  # ...and the good backup is not pruned
    assert backups.restore_if_missing(owner) == good
    assert engine.volumes["owner"] == stored(owner) and not engine.unfinished


def test_no_volume_on_this_engine_is_nothing_to_back_up(
    api_client, owner, engine, django_capture_on_commit_callbacks, monkeypatch
):
    steps = []
    assert backups.back_up(owner, "schedule", lambda p, m: steps.append(m)) is None
    assert objects() == [] and not owner.snapshots.exists()
    assert steps == ["You have no files here yet: nothing to back up"]
    api_client.force_authenticate(owner)
    monkeypatch.setattr(tasks.back_up, "delay", lambda **kwargs: tasks.back_up(**kwargs))
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post("/api/backups/")
    job = api_client.get(f"/api/jobs/{response.json()['id']}/").json()
    assert job["state"] == "done" and "nothing to back up" in job["message"]


def test_a_new_user_without_backups_starts_empty(owner, engine):
    assert backups.restore_if_missing(owner) is None
    assert "owner" not in engine.volumes


def test_a_damaged_or_unreadable_backup_fails_the_start_and_restores_nothing(owner, engine, monkeypatch):
    engine.volumes["owner"] = tar_of(work=b"precious")
    snapshot = backups.back_up(owner, "stopped")
    del engine.volumes["owner"]
    path = store().root / snapshot.key
    damaged = bytearray(path.read_bytes())
    damaged[600] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(backups.BackupError, match="damaged"):
        backups.restore_if_missing(owner)
    path.unlink()
    with pytest.raises(backups.BackupError, match="could not be restored from storage"):
        backups.restore_if_missing(owner)
    assert "owner" not in engine.volumes


def test_a_start_on_a_new_host_restores_first(owner, engine):
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="D"
    )
    engine.volumes["owner"] = tar_of(work=b"precious")
    backups.back_up(owner, "stopped")
    del engine.volumes["owner"]
    ws = lifecycle.create_workspace(owner, desktop, [])
    tasks.spawn_workspace(ws.pk)
    assert Workspace.objects.get(pk=ws.pk).state == "running"
    assert engine.volumes["owner"] == stored(owner) and engine.started == ["owner"]


def test_a_start_whose_backup_is_unreadable_fails_with_the_reason(owner, engine, monkeypatch):
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="D"
    )
    engine.volumes["owner"] = tar_of(work=b"precious")
    backups.back_up(owner, "stopped")
    del engine.volumes["owner"]

    def store_down(key, out):
        raise StoreError("connection refused")

    monkeypatch.setattr(store(), "get", store_down)
    ws = lifecycle.create_workspace(owner, desktop, [])
    tasks.spawn_workspace(ws.pk)
    ws.refresh_from_db()
    assert ws.state == "failed" and "could not be restored from storage" in ws.message
    assert engine.started == []  # never on an empty volume


def test_who_is_due_for_a_backup(owner, teammate, stranger, engine):
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="D"
    )
    running = lifecycle.create_workspace(owner, desktop, [])
    Workspace.objects.filter(pk=running.pk).update(state="running")
    stopped = lifecycle.create_workspace(teammate, desktop, [])
    Workspace.objects.filter(pk=stopped.pk).update(state="stopped")
    engine.volumes.update(owner=tar_of(a=b"o"), teammate=tar_of(a=b"t"))
    assert {u.username for u in backups.due()} == {"owner", "teammate"}  # stranger has no workspace
    backups.back_up(teammate, "stopped")
    assert {u.username for u in backups.due()} == {"owner"}  # running: always
    Workspace.objects.filter(pk=stopped.pk).move(state="stopped")  # it stopped again since
    DataSnapshot.objects.update(checked=timezone.now() - timedelta(minutes=5))
    assert {u.username for u in backups.due()} == {"owner", "teammate"}


def test_back_up_now_through_the_api(
    api_client, owner, engine, django_capture_on_commit_callbacks, monkeypatch
):
    engine.volumes["owner"] = tar_of(a=b"files")
    api_client.force_authenticate(owner)
    ran = []
    monkeypatch.setattr(
        tasks.back_up, "delay", lambda **kwargs: ran.append(kwargs) or tasks.back_up(**kwargs)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post("/api/backups/")
    assert response.status_code == 202 and response.json()["kind"] == "backup"
    assert ran == [{"user_id": owner.pk, "reason": "asked", "job_id": response.json()["id"]}]
    job = api_client.get(f"/api/jobs/{response.json()['id']}/").json()
    assert job["state"] == "done" and "backed up" in job["message"]
    listed = api_client.get("/api/backups/").json()
    assert [(b["size"], b["reason"]) for b in listed] == [(len(engine.volumes["owner"]), "asked")]


def test_nobody_sees_another_users_backups(api_client, owner, stranger, engine):
    engine.volumes["owner"] = tar_of(a=b"files")
    backups.back_up(owner, "asked")
    api_client.force_authenticate(stranger)
    assert api_client.get("/api/backups/").json() == []


def test_a_stopped_workspace_is_backed_up(owner, engine, monkeypatch):
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="D"
    )
    queued = []
    monkeypatch.setattr(tasks.back_up, "delay", lambda *args: queued.append(args))
    monkeypatch.setattr(VolumesInMemory, "stop", lambda self, workspace_id: None)
    monkeypatch.setattr(VolumesInMemory, "containers", lambda self, workspace_id: [])
    ws = lifecycle.create_workspace(owner, desktop, [])
    Workspace.objects.filter(pk=ws.pk).update(state="stopping")
    tasks.stop_workspace(ws.pk)
    assert queued == [(owner.pk, "stopped")]
    assert isinstance(store(), LocalFolderStore)
