"""Where backups go: a local folder, or an S3-compatible store (moto's real HTTP server here)."""

from __future__ import annotations

import io

import pytest

from tests.support.services import free_port
from workspaces.lib.object_store import LocalFolderStore, S3Store, StoreError, open_store


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_store(endpoint: str, bucket: str) -> S3Store:
    options = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "lattice",
        "aws_secret_access_key": "lattice-secret",
    }
    store = S3Store(bucket, "backups/", **options)
    store.client.create_bucket(Bucket=bucket)
    return store


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path):
    if request.param == "folder":
        return LocalFolderStore(tmp_path / "objects")
    return s3_store(request.getfixturevalue("s3_endpoint"), f"lattice-{tmp_path.name.lower()[-20:]}")


def test_an_object_is_stored_read_listed_and_deleted(store):
    payload = bytes(range(256)) * 9000  # > 2 MiB, several chunks
    store.put("data/ada/1.tar", io.BytesIO(payload))
    store.put("data/ada/2.tar", io.BytesIO(b"second"))
    store.put("data/bob/1.tar", io.BytesIO(b"bob's"))
    out = io.BytesIO()
    store.get("data/ada/1.tar", out)
    assert out.getvalue() == payload
    assert [(o.key, o.size) for o in store.list("data/ada/")] == [
        ("data/ada/1.tar", len(payload)),
        ("data/ada/2.tar", 6),
    ]
    store.delete("data/ada/1.tar")
    store.delete("data/ada/1.tar")  # already gone: fine
    assert [o.key for o in store.list("data/")] == ["data/ada/2.tar", "data/bob/1.tar"]
    with pytest.raises(StoreError):
        store.get("data/ada/1.tar", io.BytesIO())


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_keys_stay_inside_the_store(store, key):
    with pytest.raises(StoreError, match="bad object key"):
        store.put(key, io.BytesIO(b"x"))


def test_a_half_written_object_is_never_seen(tmp_path):
    store = LocalFolderStore(tmp_path)

    class Breaks(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise OSError("the disk filled up")
            return super().read(size)

    with pytest.raises(StoreError, match="the disk filled up"):
        store.put("data/ada/1.tar", Breaks(b"x" * 3_000_000))
    assert store.list("") == []
    assert list(tmp_path.rglob("*.tar")) == [] and not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_setting_names_the_store(settings, s3_endpoint, tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalFolderStore)
    settings.LATTICE_S3_ENDPOINT_URL = s3_endpoint
    settings.LATTICE_S3_ACCESS_KEY, settings.LATTICE_S3_SECRET_KEY = "lattice", "lattice-secret"
    settings.LATTICE_S3_REGION = "us-east-1"
    store = open_store("s3://school-backups/lattice")
    assert (store.bucket, store.prefix) == ("school-backups", "lattice/")
    store.client.create_bucket(Bucket="school-backups")
    store.put("data/x.tar", io.BytesIO(b"x"))
    raw = store.client.list_objects_v2(Bucket="school-backups")["Contents"]
    assert [o["Key"] for o in raw] == ["lattice/data/x.tar"]


def test_an_unreachable_store_is_reported_with_what_to_check(settings):
    from workspaces.lib import health, object_store

    settings.LATTICE_OBJECT_STORAGE = "s3://nowhere/lattice"
    settings.LATTICE_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.LATTICE_S3_ACCESS_KEY, settings.LATTICE_S3_SECRET_KEY = "k", "s"
    settings.LATTICE_S3_REGION = "us-east-1"
    object_store.store.cache_clear()
    try:
        problem = health.object_storage_problem()
    finally:
        object_store.store.cache_clear()
    assert problem.startswith("Cannot use the backup storage s3://nowhere/lattice")
    assert "LATTICE_S3_ENDPOINT_URL" in problem


def test_the_folders_own_errors_are_store_errors(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    store = LocalFolderStore(tmp_path / "a-file" / "objects")
    for attempt in (
        lambda: store.put("data/ada/1.tar", io.BytesIO(b"x")),
        lambda: store.get("data/ada/1.tar", io.BytesIO()),
        lambda: store.delete("data/ada/1.tar"),
        lambda: store.check(),
    ):
        with pytest.raises(StoreError, match="Not a directory"):
            attempt()
    store = LocalFolderStore(tmp_path / "objects")
    store.check()  # makes the folder
    (tmp_path / "objects" / "data" / "x.tar").mkdir(parents=True)  # a key that is a folder
    (tmp_path / "objects" / "data" / "x.tar" / "inside").write_bytes(b"x")
    with pytest.raises(StoreError, match=r"could not delete data/x\.tar"):
        store.delete("data/x.tar")
    monkeypatch.setattr("os.access", lambda path, mode: False)  # root may write anywhere
    with pytest.raises(StoreError, match="cannot write to"):
        store.check()


def test_the_health_probe_is_a_check_not_a_listing(store, monkeypatch, settings):
    from workspaces.lib import health, object_store

    store.check()  # an empty store is usable
    store.put("data/ada/1.tar", io.BytesIO(b"x"))
    store.check()
    monkeypatch.setattr(object_store, "store", lambda: store)
    monkeypatch.setattr(type(store), "list", lambda self, prefix: pytest.fail("the probe listed the backups"))
    assert health.object_storage_problem() is None
    broken = StoreError("no such bucket")
    monkeypatch.setattr(type(store), "check", lambda self: (_ for _ in ()).throw(broken))
    assert "(no such bucket)" in health.object_storage_problem()
