"""Backups end to end: the real engine, worker and object storage folder.

A student's files are backed up when their workspace stops; on an engine
that has lost their volume (a new host), the next start restores them.
"""

from __future__ import annotations

import io
import tarfile
import time

import pytest

from tests.support.e2e import docker, running, sh, wait_for_job, wait_for_state, wait_until_gone
from workspaces.engine import names
from workspaces.lib.object_store import store
from workspaces.models import DataSnapshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.docker]


def wait_for_backup(owner, newer_than: int = 0, timeout: float = 60) -> DataSnapshot:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = owner.snapshots.filter(pk__gt=newer_than).first()
        if snapshot is not None:
            return snapshot
        time.sleep(0.2)
    raise AssertionError(f"no backup of {owner.username} after {timeout} s")


def test_a_stopped_workspace_is_backed_up_and_a_new_host_gets_the_files_back(
    engine, student, owner, settings
):
    ws_id = running(student, apps=())
    digest = sh(
        engine,
        ws_id,
        "display",
        "mkdir -p /data/project && head -c 2000000 /dev/urandom > /data/project/work.bin"
        " && echo notes > /data/notes.txt && sha256sum /data/project/work.bin",
    ).split()[0]

    assert student.post(f"/api/workspaces/{ws_id}/stop/").status_code == 202
    wait_for_state(ws_id, {"stopped"})
    snapshot = wait_for_backup(owner)
    assert snapshot.reason == "stopped" and snapshot.size > 2_000_000
    # The object is a tar of the volume: the user's files, owned by the user.
    tar = io.BytesIO()
    store().get(snapshot.key, tar)
    tar.seek(0)
    with tarfile.open(fileobj=tar) as archive:
        members = {m.name.removeprefix("./"): m for m in archive.getmembers()}
    assert members["project/work.bin"].size == 2_000_000 and members["project/work.bin"].uid == 1000
    assert "notes.txt" in members

    # A new engine host: the workspace and the volume are gone, the backup is not.
    assert student.delete(f"/api/workspaces/{ws_id}/").status_code == 202
    wait_until_gone(ws_id)
    docker("volume", "rm", names.data_volume(settings.LATTICE_ENGINE_PREFIX, owner.pk))

    again = running(student, apps=())
    assert sh(engine, again, "display", "sha256sum /data/project/work.bin").split()[0] == digest
    assert sh(engine, again, "display", "cat /data/notes.txt; stat -c %u /data/notes.txt").split() == [
        "notes",
        "1000",
    ]
    # The restore's marker is gone: the volume counts as whole, and backups do not carry it.
    assert ".lattice-restoring" not in sh(engine, again, "display", "ls -A /data").split()
    # Back up now, with nothing changed: no second copy in the store.
    folder = snapshot.key.rsplit("/", 1)[0] + "/"
    before = [o.key for o in store().list(folder)]
    response = student.post("/api/backups/")
    assert response.status_code == 202

    job = wait_for_job(response.json()["id"], timeout=60)
    assert job.state == "done", job.message
    assert [o.key for o in store().list(folder)] == before
