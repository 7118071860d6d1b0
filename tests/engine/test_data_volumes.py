"""A data volume as a whole against the real engine: export, import, and an import cut short."""

from __future__ import annotations

import hashlib
import io
import secrets
import tarfile

import pytest
import requests

from tests.engine.conftest import docker, exists
from workspaces.engine import names
from workspaces.engine.docker_volumes import RESTORING
from workspaces.engine.errors import EngineError


def tar_of(**files: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        top = tarfile.TarInfo(".")
        top.type, top.mode, top.uid, top.gid = tarfile.DIRTYPE, 0o755, 1000, 1000
        archive.addfile(top)
        for name, content in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.uid, info.gid = len(content), 1000, 1000
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def files_of(backend, owner: int) -> dict[str, bytes]:
    out = io.BytesIO()
    backend.export_data(owner, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as archive:
        return {
            m.name.removeprefix("./"): archive.extractfile(m).read()
            for m in archive.getmembers()
            if m.isfile()
        }


@pytest.fixture
def owner() -> int:
    """A user id of this test alone."""
    return secrets.randbelow(10**9) + 1


def cut_short(backend, monkeypatch, failure: BaseException, at_call: int = 2):
    """The engine's put_archive fails at its at_call-th call (the marker is the first)."""
    real, calls = backend.api.put_archive, []

    def put_archive(*args, **kwargs):
        calls.append(args)
        if len(calls) == at_call:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.api, "put_archive", put_archive)


def test_an_import_is_exported_whole_without_the_marker(backend, owner):
    assert not backend.data_volume_exists(owner)
    backend.import_data(owner, io.BytesIO(tar_of(notes=b"my notes")))
    assert backend.data_volume_exists(owner)
    assert files_of(backend, owner) == {"notes": b"my notes"}


def test_a_failed_import_removes_the_volume_it_made(backend, owner, monkeypatch):
    cut_short(backend, monkeypatch, requests.exceptions.ConnectionError("the engine went away"))
    with pytest.raises(EngineError):
        backend.import_data(owner, io.BytesIO(tar_of(notes=b"my notes")))
    assert not exists("volume", names.data_volume(backend.prefix, owner))
    assert not backend.data_volume_exists(owner)


def test_an_import_cut_short_counts_as_missing_until_one_finishes(backend, owner, monkeypatch):
    backend.import_data(owner, io.BytesIO(tar_of(old=b"old files")))
    # On a volume that was there, a failure leaves it, with the marker: as a killed worker would.
    with monkeypatch.context() as patch:
        patch.setattr(backend.api, "start", lambda container: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            backend.import_data(owner, io.BytesIO(tar_of(notes=b"my notes")))
    assert exists("volume", names.data_volume(backend.prefix, owner))
    assert not backend.data_volume_exists(owner)
    with pytest.raises(EngineError, match="did not finish"):
        backend.export_data(owner, io.BytesIO())

    backend.import_data(owner, io.BytesIO(tar_of(notes=b"my notes")))
    assert backend.data_volume_exists(owner)
    files = files_of(backend, owner)
    assert files["notes"] == b"my notes" and RESTORING not in files


def test_a_volume_no_import_made_is_found_with_one_inspect(backend, owner, monkeypatch):
    """A workspace start asks on every launch: only restored volumes pay for the marker check."""
    volume = names.data_volume(backend.prefix, owner)
    backend.api.create_volume(volume, driver="local", labels=backend.data_volume_labels(owner))
    try:
        monkeypatch.setattr(
            backend, "file_ops_container", lambda *a, **k: pytest.fail("a container was made")
        )
        assert backend.data_volume_exists(owner)
    finally:
        backend.api.remove_volume(volume, force=True)


def fill(backend, owner: int, script: str) -> str:
    """Make the owner's data volume (as a start would) and run a shell script in /data as the user."""
    volume = names.data_volume(backend.prefix, owner)
    backend._ensure_volume(volume, backend.data_volume_labels(owner))
    docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "1000:1000",
        "-v",
        f"{volume}:/data",
        "-w",
        "/data",
        "lattice/base:latest",
        "bash",
        "-c",
        script,
    )
    return volume


def members_of(backend, owner: int) -> dict[str, tarfile.TarInfo]:
    out = io.BytesIO()
    backend.export_data(owner, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as archive:
        return {m.name.removeprefix("./"): m for m in archive.getmembers()}


def test_links_that_point_out_of_data_are_restored_as_links(backend, owner):
    """A student's `ln -s /etc/passwd x` and `ln -s ../../.. up` never make a restore fail (nor get followed)."""
    fill(
        backend,
        owner,
        "ln -s /etc/passwd x && ln -s ../../.. up && mkdir -p deep/er && ln -s ../../../../etc deep/er/etc"
        " && ln -s notes inside && echo mine > notes",
    )
    backup = io.BytesIO()
    backend.export_data(owner, backup)
    backup.seek(0)
    docker("volume", "rm", names.data_volume(backend.prefix, owner))
    assert not backend.data_volume_exists(owner)

    backend.import_data(owner, backup)

    assert backend.data_volume_exists(owner)
    restored = members_of(backend, owner)
    links = {name: (m.issym(), m.linkname) for name, m in restored.items() if m.issym()}
    assert links == {
        "x": (True, "/etc/passwd"),
        "up": (True, "../../.."),
        "deep/er/etc": (True, "../../../../etc"),
        "inside": (True, "notes"),
    }
    assert restored["notes"].isfile() and RESTORING not in restored
    # Nothing was read through a link: no passwd file, no host folder came in. Every
    # member is as it was, times too (but the top folder's, which the restore itself changes).
    assert not any(name.startswith(("up/", "x/", "deep/er/etc/")) for name in restored)
    backup.seek(0)
    with tarfile.open(fileobj=backup) as archive:
        before = {
            m.name.removeprefix("./"): (m.type, m.linkname, m.mtime)
            for m in archive
            if m.name not in (".", "./")
        }
    assert {n: (m.type, m.linkname, m.mtime) for n, m in restored.items() if n not in (".", "")} == before


HOSTILE = r"""
mkdir -p class/sub other && printf 'secret' > other/private.txt
printf 'one' > $'class/a\nb'
printf 'two' > 'class/-rf --no-preserve-root'
printf 'three' > 'class/with space.txt'
printf 'four' > $'class/caf\xe9.txt'
head -c 300000 /dev/urandom > class/sub/work.bin
ln -s /etc/passwd class/passwd
ln -s ../other class/other-folder
mkfifo class/pipe
printf 'mine alone' > class/locked && chmod 000 class/locked
sha256sum class/sub/work.bin | cut -c1-64 > work.sha
"""


def test_a_copy_takes_regular_files_whatever_their_names_and_skips_the_rest(backend, owner):
    student, teacher = owner, owner + 1
    fill(backend, student, HOSTILE)
    fill(backend, teacher, "true")
    files = backend.copy_data(student, "class", teacher, "collected/class/student")

    by_path = {f["path"]: f for f in files}
    written = {p for p, f in by_path.items() if f["status"] == "copied"}
    assert written == {"a\nb", "-rf --no-preserve-root", "with space.txt", "caf\\xe9.txt", "sub/work.bin"}
    assert all(by_path[p]["source_sha256"] == by_path[p]["sha256"] for p in written)
    skipped = {p: f["detail"] for p, f in by_path.items() if f["status"] == "skipped"}
    assert skipped == {"passwd": "a symbolic link", "other-folder": "a symbolic link", "pipe": "a named pipe"}
    # A file the helper may not read is told, and the others still come.
    assert (by_path["locked"]["status"], by_path["locked"]["detail"]) == (
        "failed",
        "could not be read (Permission denied)",
    )

    got = members_of(backend, teacher)
    folder = "collected/class/student/"
    contents = {
        "a\nb": b"one",
        "-rf --no-preserve-root": b"two",
        "with space.txt": b"three",
        "caf\udce9.txt": b"four",
    }
    out = io.BytesIO()
    backend.export_data(teacher, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as archive:
        for name, content in contents.items():
            assert archive.extractfile(f"./{folder}{name}").read() == content
        work = archive.extractfile(f"./{folder}sub/work.bin").read()
    assert hashlib.sha256(work).hexdigest() == by_path["sub/work.bin"]["source_sha256"]
    inside = {n.removeprefix(folder) for n in got if n.startswith(folder)}
    assert inside == {"sub", *contents, "sub/work.bin"}, "a link, a pipe or a linked folder's file came in"
    assert not any(m.issym() or m.isfifo() for m in got.values())


def test_a_copy_never_replaces_and_a_class_folder_that_is_a_link_is_refused(backend, owner):
    student, teacher = owner, owner + 1
    fill(backend, student, "mkdir class && echo new > class/main.py && echo same > class/same.txt")
    fill(backend, teacher, "mkdir -p t && echo old > t/main.py && echo same > t/same.txt")
    files = {f["path"]: f["status"] for f in backend.copy_data(student, "class", teacher, "t")}
    assert files == {"main.py.1": "beside", "same.txt": "same"}

    fill(backend, student, "rm -rf class && mkdir elsewhere && echo x > elsewhere/f && ln -s elsewhere class")
    with pytest.raises(EngineError, match="no folder /data/class"):
        backend.copy_data(student, "class", teacher, "t")


def test_a_hard_link_to_a_link_out_of_data_is_restored_as_that_link(backend, owner):
    fill(backend, owner, "ln -s ../../.. up && ln -P up also-up")
    backup = io.BytesIO()
    backend.export_data(owner, backup)
    backup.seek(0)
    docker("volume", "rm", names.data_volume(backend.prefix, owner))

    backend.import_data(owner, backup)

    restored = members_of(backend, owner)
    assert {n: (m.issym(), m.linkname) for n, m in restored.items() if n in ("up", "also-up")} == {
        "up": (True, "../../.."),
        "also-up": (True, "../../.."),
    }
