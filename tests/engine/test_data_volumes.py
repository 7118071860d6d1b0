"""A data volume as a whole against the real engine: export, import, and an import cut short."""

from __future__ import annotations

import io
import secrets
import tarfile

import pytest
import requests

from tests.engine.conftest import exists
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


def files_of(backend, owner: str) -> dict[str, bytes]:
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
def owner() -> str:
    return f"Vol.User+{secrets.token_hex(3)}@example.org"


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
