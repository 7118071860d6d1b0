"""Every path that touches a user's files, against the real engine, Redis and a storage folder:
a copy to a user on a new host, a collect from a hostile student, volumes keyed by id,
username-keyed volumes moved, and the per-user lock."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import tarfile
import time

import pytest
from django.conf import settings

from workspaces import tasks
from workspaces.engine import names
from workspaces.lib.engine_access import backend
from workspaces.lib.object_store import store
from workspaces.models import Classroom, Job, JobState, User
from workspaces.services import backups, file_copies, jobs

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def volumes_of_this_run() -> list[str]:
    return docker(
        "volume", "ls", "-q", "--filter", f"label=lattice.prefix={settings.LATTICE_ENGINE_PREFIX}"
    ).split()


@pytest.fixture
def engine(settings, tmp_path):
    """The real engine (no worker: tasks run here) and a storage folder; data volumes removed after."""
    settings.LATTICE_OBJECT_STORAGE = str(tmp_path / "objects")
    store.cache_clear()
    yield backend()
    store.cache_clear()
    for volume in volumes_of_this_run():
        docker("volume", "rm", "-f", volume)


def in_volume(volume: str, script: str) -> None:
    """Run a shell script in /data of a volume, as the workspace user."""
    docker(
        "run", "--rm", "--network", "none", "--user", "1000:1000", "-v", f"{volume}:/data", "-w", "/data",
        "lattice/base:latest", "bash", "-c", script,
    )  # fmt: skip


def fill(user: User, script: str) -> None:
    """The user's data volume as a workspace start makes it, with files the script writes."""
    engine = backend()
    engine._ensure_volume(names.data_volume(engine.prefix, user.pk), engine.data_volume_labels(user.pk))
    in_volume(names.data_volume(engine.prefix, user.pk), script)


def files_of(user: User) -> dict[str, tarfile.TarInfo | bytes]:
    """The user's /data: each regular file's bytes, every other member as itself."""
    out = io.BytesIO()
    backend().export_data(user.pk, out)
    out.seek(0)
    found: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=out) as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            found[name] = archive.extractfile(member).read() if member.isfile() else member
    return found


def lose_volume(user: User) -> None:
    """A new host: the engine has no volume for the user."""
    docker("volume", "rm", names.data_volume(settings.LATTICE_ENGINE_PREFIX, user.pk))
    assert not backend().data_volume_exists(user.pk)


def test_starter_files_to_a_user_on_a_new_host_bring_their_own_files_back_first(engine, make_user):
    teacher, student = make_user("teach", role="teacher"), make_user("pupil")
    fill(teacher, "mkdir -p week1 && echo 'print(1)' > week1/main.py")
    fill(student, "mkdir -p project && echo 'years of work' > project/thesis.txt")
    assert backups.back_up(student, "stopped") is not None
    lose_volume(student)

    files = file_copies.copy_folder(teacher, "week1", student, "class-1")

    assert [(f["path"], f["status"]) for f in files] == [("main.py", "copied")]
    have = files_of(student)
    assert have["project/thesis.txt"] == b"years of work\n"  # the old code made an empty volume here
    assert have["class-1/main.py"] == b"print(1)\n"
    # And the next backup records both, not an empty volume.
    assert backups.back_up(student, "schedule").fingerprint != student.snapshots.last().fingerprint


HOSTILE_STUDENT = r"""
mkdir -p {folder}/sub private && echo 'my diary' > private/diary.txt
printf 'first' > $'{folder}/a\nb'
printf 'second' > '{folder}/--help'
printf 'third' > $'{folder}/\xff\xfe.txt'
head -c 100000 /dev/urandom > {folder}/sub/work.bin
ln -s /etc/passwd {folder}/passwd
ln -s ../private {folder}/diary
mkfifo {folder}/pipe
"""


def test_a_hostile_student_never_breaks_the_collect(engine, make_user):
    teacher = make_user("teach", role="teacher")
    hostile, fine, broken, empty = (make_user(n) for n in ("hostile", "fine", "linked", "nothing"))
    room = Classroom.objects.create(name="Lab")
    room.teachers.add(teacher)
    room.students.add(hostile, fine, broken, empty)
    folder = room.folder
    fill(teacher, "true")
    fill(hostile, HOSTILE_STUDENT.format(folder=folder))
    # A socket, made from the host: the base image has no tool for one.
    listening = socket.socket(socket.AF_UNIX)
    mountpoint = json.loads(
        docker("volume", "inspect", names.data_volume(settings.LATTICE_ENGINE_PREFIX, hostile.pk))
    )
    listening.bind(f"{mountpoint[0]['Mountpoint']}/{folder}/sock")
    fill(fine, f"mkdir {folder} && echo 'homework' > {folder}/answer.txt")
    fill(broken, f"mkdir elsewhere && echo secret > elsewhere/s && ln -s elsewhere {folder}")
    # `empty` has never started a workspace: no volume at all.
    job = Job.objects.create(owner=teacher, kind="collect")

    tasks.collect_classroom(job.pk, room.pk)
    listening.close()

    job.refresh_from_db()
    assert job.state == JobState.DONE, job.message
    report = job.result
    assert report["fine"] == {
        "ok": True,
        "files": 1,
        "detail": "verified by sha256",
        "skipped": [],
        "skipped_count": 0,
        "failed": [],
    }
    assert report["hostile"]["ok"] and report["hostile"]["files"] == 4
    assert sorted((s["path"], s["detail"]) for s in report["hostile"]["skipped"]) == [
        ("diary", "a symbolic link"),
        ("passwd", "a symbolic link"),
        ("pipe", "a named pipe"),
        ("sock", "a socket"),
    ]
    assert not report["linked"]["ok"] and "no folder" in report["linked"]["detail"]
    assert not report["nothing"]["ok"] and report["nothing"]["files"] == 0
    assert job.message == "Collected from 2 of 4 students; not all from linked, nothing."

    got = files_of(teacher)
    base = f"collected/{folder}"
    source = files_of(hostile)
    for name in ("a\nb", "--help", "\udcff\udcfe.txt", "sub/work.bin"):
        collected, original = got[f"{base}/hostile/{name}"], source[f"{folder}/{name}"]
        assert hashlib.sha256(collected).digest() == hashlib.sha256(original).digest()
    assert got[f"{base}/fine/answer.txt"] == b"homework\n"
    taken = [n for n in got if n.startswith(f"{base}/")]
    assert not any(isinstance(got[n], tarfile.TarInfo) and not got[n].isdir() for n in taken)
    assert not any("diary" in n or "passwd" in n or "secret" in str(got[n]) for n in taken)


def test_a_collect_always_ends_even_when_lattice_itself_breaks(engine, make_user, monkeypatch):
    teacher, student = make_user("teach", role="teacher"), make_user("pupil")
    room = Classroom.objects.create(name="Lab")
    room.teachers.add(teacher)
    room.students.add(student)
    job = Job.objects.create(owner=teacher, kind="collect")
    monkeypatch.setattr(jobs, "report", lambda *a: (_ for _ in ()).throw(RuntimeError("broken")))

    tasks.collect_classroom(job.pk, room.pk)

    job.refresh_from_db()
    assert job.state == JobState.FAILED and "Collecting stopped" in job.message


def test_a_reused_username_never_opens_the_old_accounts_files(engine, make_user):
    alice = make_user("alice")
    fill(alice, "echo 'the first alice' > mine.txt")
    backups.back_up(alice, "stopped")
    old_id = alice.pk
    alice.delete()
    again = make_user("alice")
    assert again.pk != old_id

    assert backups.restore_if_missing(again) is None  # no backup of hers, no volume of hers
    assert not backend().data_volume_exists(again.pk)
    fill(again, "true")  # her first start
    assert "mine.txt" not in files_of(again)
    assert names.data_volume(settings.LATTICE_ENGINE_PREFIX, old_id) in volumes_of_this_run()  # kept


def legacy_volume(username: str, script: str) -> str:
    """A data volume as Lattice made them before ids: named and labelled by username."""
    prefix = settings.LATTICE_ENGINE_PREFIX
    name = names.legacy_data_volume(prefix, username)
    docker(
        "volume", "create", "--label", f"lattice.prefix={prefix}", "--label", f"lattice.owner={username}",
        "--label", "lattice.role=data", name,
    )  # fmt: skip
    in_volume(name, script)
    return name


OLD_FILES = r"""
mkdir -p work/deep && echo notes > work/notes.txt && head -c 50000 /dev/urandom > work/deep/blob
printf 'x' > $'work/odd\nname' && chmod 0640 work/notes.txt && ln -s ../../.. up && ln -s work/notes.txt short
touch -d @1600000000 work/notes.txt
"""


def test_a_username_keyed_volume_is_moved_whole_and_kept(engine, make_user):
    bob = make_user("Bob.Smith")
    old = legacy_volume("Bob.Smith", OLD_FILES)
    stranger_old = legacy_volume("gone", "echo left > behind.txt")

    lines = backups.migrate_all()

    assert f"{old}: moved to bob.smith's volume (id {bob.pk}); an administrator may remove it" in lines
    assert f"{stranger_old}: no account named 'gone'; kept as it is" in lines
    in_volume(old, "true")  # still there, still readable

    def every_member(export) -> dict[str, tuple]:
        out = io.BytesIO()
        export(out)
        out.seek(0)
        with tarfile.open(fileobj=out) as archive:
            return {
                m.name.removeprefix("./"): (m.type, m.mode, m.uid, m.gid, m.mtime, m.linkname, m.size)
                + ((hashlib.sha256(archive.extractfile(m).read()).hexdigest(),) if m.isfile() else ())
                for m in archive
                if m.name not in (".", "./")  # the top folder's own time: the move writes into it
            }

    before = every_member(lambda out: backend().export_legacy_data(old, out))
    after = every_member(lambda out: backend().export_data(bob.pk, out))
    assert after == before
    assert len([v for v in after.values() if v[0] == tarfile.REGTYPE]) == 3
    assert after["work/notes.txt"][1] & 0o7777 == 0o640 and after["work/notes.txt"][4] == 1_600_000_000
    assert after["up"][5] == "../../.." and after["short"][5] == "work/notes.txt"
    assert files_of(bob)["work/odd\nname"] == b"x"
    # Asked again, nothing moves twice.
    assert f"{old}: moved to " in " ".join(backups.migrate_all())
    listed = {v.name: v.migrated_to for v in backend().legacy_data_volumes()}
    assert listed[old] == names.data_volume(settings.LATTICE_ENGINE_PREFIX, bob.pk)


def test_a_username_keyed_volume_older_than_the_account_stays_with_its_first_owner(engine, make_user):
    old = legacy_volume("carol", "echo 'an earlier carol' > hers.txt")
    time.sleep(1.2)  # the engine's times are in whole seconds
    carol = make_user("carol")

    assert backups.restore_if_missing(carol) is None
    assert not backend().data_volume_exists(carol.pk)
    assert f"{old}: older than the account carol; kept for an earlier owner" in backups.migrate_all()


def test_the_first_start_after_the_upgrade_moves_the_files(engine, make_user):
    dana = make_user("dana")
    legacy_volume("dana", "echo 'from before' > old.txt")
    steps = []
    backups.restore_if_missing(dana, lambda p, m: steps.append(m))
    assert files_of(dana)["old.txt"] == b"from before\n"
    assert steps == ["Moving your files to their new place"]


def test_one_lock_per_user(engine, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    with backups.held(alice, bob):
        with pytest.raises(backups.BackupError, match="taking long"), backups.held(bob, wait=0.3):
            pass
        with backups.held(make_user("carol"), wait=0.3):
            pass  # someone else's files: no wait
    with backups.held(bob, wait=0.3):
        pass  # released


def test_a_backup_with_links_out_of_data_restores_them_as_links(engine, make_user):
    """Back up, lose the volume, restore: `ln -s /etc/passwd x`, `ln -s ../../.. up` come back as links."""
    eve = make_user("eve")
    fill(
        eve, "ln -s /etc/passwd x && ln -s ../../.. up && mkdir d && ln -s ../../../.. d/up && echo hi > d/f"
    )
    snapshot = backups.back_up(eve, "stopped")
    lose_volume(eve)

    assert backups.restore_if_missing(eve) == snapshot

    got = files_of(eve)
    assert {n: m.linkname for n, m in got.items() if isinstance(m, tarfile.TarInfo) and m.issym()} == {
        "x": "/etc/passwd",
        "up": "../../..",
        "d/up": "../../../..",
    }
    assert got["d/f"] == b"hi\n" and not any(n.startswith(("x/", "up/", "d/up/")) for n in got)
    assert backups.back_up(eve, "schedule") == snapshot  # the same files: nothing new to store
