"""Uploaded build contexts: what is kept, what is refused, and the limits while unpacking."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
import zipfile

import pytest

from workspaces.engine import build_context
from workspaces.engine.build_context import BadContext, context_from_upload

DOCKERFILE = b"FROM lattice/base:latest\n"


def tar_upload(*members: tuple[str, bytes | None, dict]) -> io.BytesIO:
    """members: (name, content or None for a folder, TarInfo attributes)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, content, attrs in members:
            info = tarfile.TarInfo(name)
            for key, value in attrs.items():
                setattr(info, key, value)
            if content is None and "type" not in attrs:
                info.type = tarfile.DIRTYPE
            if content is not None:
                info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    out.seek(0)
    return out


def zip_upload(*members: tuple[str, bytes, int]) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, content)
    out.seek(0)
    return out


def unpack(upload: io.BytesIO, filename: str = "context.tar.gz") -> dict[str, tarfile.TarInfo]:
    out = io.BytesIO()
    context_from_upload(upload, filename, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as context:
        return {m.name: m for m in context.getmembers()}


def refused(upload: io.BytesIO, filename: str = "context.tar.gz") -> str:
    with pytest.raises(BadContext) as caught:
        context_from_upload(upload, filename, io.BytesIO())
    return str(caught.value)


def test_dot_files_keep_their_names_and_a_leading_dot_slash_goes():
    members = unpack(
        tar_upload(
            ("./Dockerfile", DOCKERFILE, {}),
            ("./.dockerignore", b"*.log\n", {}),
            (".env.example", b"A=1\n", {}),
            ("./src/./main.py", b"print(1)\n", {}),
        )
    )
    assert set(members) == {"Dockerfile", ".dockerignore", ".env.example", "src/main.py"}


def test_the_execute_bit_is_kept_and_every_file_is_readable():
    members = unpack(
        tar_upload(
            ("Dockerfile", DOCKERFILE, {"mode": 0o600}),
            ("start.sh", b"#!/bin/sh\n", {"mode": 0o700}),
            ("bin", None, {"mode": 0o700}),
        )
    )
    assert members["Dockerfile"].mode == 0o644
    assert members["start.sh"].mode == 0o755
    assert members["bin"].isdir() and members["bin"].mode == 0o755


def test_zip_modes_and_a_single_top_folder():
    members = unpack(
        zip_upload(
            ("lab/Dockerfile", DOCKERFILE, 0o100644),
            ("lab/run", b"#!/bin/sh\n", 0o100755),
            ("__MACOSX/lab/._run", b"junk", 0o100644),
        ),
        "lab.zip",
    )
    assert set(members) == {"Dockerfile", "run"}
    assert members["run"].mode == 0o755 and members["Dockerfile"].mode == 0o644


@pytest.mark.parametrize(
    "name", ["../evil", "a/../../evil", "/etc/passwd", "..", "a\\..\\..\\evil", "C:/Windows/x"]
)
def test_paths_that_leave_the_context_are_refused(name):
    message = refused(tar_upload(("Dockerfile", DOCKERFILE, {}), (name, b"x", {})))
    assert name in message
    assert "absolute" in message or "'..'" in message


def test_zip_paths_that_leave_the_context_are_refused():
    assert "'..'" in refused(zip_upload(("Dockerfile", DOCKERFILE, 0), ("../x", b"x", 0)), "c.zip")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_are_refused_with_a_clear_message(kind):
    message = refused(
        tar_upload(
            ("Dockerfile", DOCKERFILE, {}), ("secrets", b"", {"type": kind, "linkname": "/etc/shadow"})
        )
    )
    assert "link (secrets)" in message and "not accepted" in message


def test_zip_symlinks_are_refused():
    message = refused(zip_upload(("Dockerfile", DOCKERFILE, 0o100644), ("l", b"/etc", 0o120777)), "c.zip")
    assert "link (l)" in message


def test_devices_are_refused():
    message = refused(tar_upload(("Dockerfile", DOCKERFILE, {}), ("null", b"", {"type": tarfile.CHRTYPE})))
    assert "device or pipe (null)" in message


def test_the_file_count_is_capped_while_unpacking(monkeypatch):
    monkeypatch.setattr(build_context, "MAX_FILES", 3)
    files = [(f"f{i}", b"x", {}) for i in range(10)]
    assert "more than 3 files" in refused(tar_upload(("Dockerfile", DOCKERFILE, {}), *files))


def test_the_unpacked_size_is_capped_before_reading(monkeypatch):
    monkeypatch.setattr(build_context, "MAX_UNPACKED_BYTES", 1024**2)
    big = b"\0" * (2 * 1024**2)  # compresses to almost nothing: a small upload, a big context
    message = refused(tar_upload(("Dockerfile", DOCKERFILE, {}), ("zeros", big, {})))
    assert "unpacks to more than 1 MiB" in message


def test_the_upload_size_is_checked_first(monkeypatch):
    monkeypatch.setattr(build_context, "MAX_UPLOAD_BYTES", 100)
    assert "over 0 MiB" in refused(io.BytesIO(b"x" * 200))


def test_an_archive_without_a_dockerfile_or_not_an_archive():
    assert "no Dockerfile" in refused(tar_upload(("README", b"hi", {})))
    assert "Cannot read notes.zip" in refused(io.BytesIO(b"just text"), "notes.zip")
    assert "Cannot read notes.tar" in refused(io.BytesIO(b"just text"), "notes.tar")


def raw_tar_upload(
    *members: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes], fmt=tarfile.GNU_FORMAT
) -> io.BytesIO:
    """Members as given (with their pax headers or long names), gzipped."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=fmt) as archive:
        for item in members:
            info, content = item if isinstance(item, tuple) else (item, b"")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    out.seek(0)
    return out


def dockerfile() -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo("Dockerfile"), DOCKERFILE


def test_long_name_headers_count_as_members(monkeypatch):
    monkeypatch.setattr(build_context, "MAX_FILES", 3)
    long = [tarfile.TarInfo(f"{'d' * 120}/f{i}") for i in range(2)]  # each: a GNU 'L' header, then the file
    assert "more than 3 files" in refused(raw_tar_upload(dockerfile(), *long))
    short = [tarfile.TarInfo(f"f{i}") for i in range(2)]
    assert set(unpack(raw_tar_upload(dockerfile(), *short))) == {"Dockerfile", "f0", "f1"}


def test_pax_headers_count_against_the_unpacked_size(monkeypatch):
    monkeypatch.setattr(build_context, "MAX_UNPACKED_BYTES", 1024**2)
    padded = []
    for i in range(30):  # 30 tiny files, each with a 50 KiB pax record: 1.5 MiB of headers
        info = tarfile.TarInfo(f"f{i}")
        info.pax_headers = {"comment": "x" * 50_000}
        padded.append(info)
    message = refused(raw_tar_upload(dockerfile(), *padded, fmt=tarfile.PAX_FORMAT))
    assert "unpacks to more than 1 MiB" in message


def test_a_huge_pax_header_is_refused_before_it_is_read():
    info = tarfile.TarInfo("f")
    info.pax_headers = {"comment": "x" * (64 * 1024**2)}  # 64 MiB that gzip makes 64 KiB
    upload = raw_tar_upload(info, dockerfile(), fmt=tarfile.PAX_FORMAT)
    assert upload.getbuffer().nbytes < 1024**2
    tracemalloc.start()
    try:
        message = refused(upload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "pax header" in message and "64 KiB" in message
    assert peak < 16 * 1024**2, f"{peak} bytes held while refusing it"


def test_a_gnu_long_name_longer_than_a_path_is_refused():
    message = refused(raw_tar_upload(dockerfile(), tarfile.TarInfo("a/" * 3000 + "f")))
    assert "longer than 4096 bytes" in message


def test_the_name_a_pax_record_gives_is_the_one_checked():
    sneaky = tarfile.TarInfo("harmless.txt")
    sneaky.pax_headers = {"path": "../../etc/cron.d/evil"}
    assert "'..'" in refused(raw_tar_upload(dockerfile(), (sneaky, b"x"), fmt=tarfile.PAX_FORMAT))
    # An archive that starts with a pax header (a non-ASCII name) is an ordinary archive.
    first = tarfile.TarInfo("données.txt")
    first.pax_headers = {"path": "données.txt"}
    members = unpack(raw_tar_upload((first, b"1"), dockerfile(), fmt=tarfile.PAX_FORMAT))
    assert set(members) == {"Dockerfile", "données.txt"}
