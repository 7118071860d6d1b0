"""Build contexts: the tar an image is built from, made from an admin's
upload (.tar, .tar.gz or .zip) or from a folder of images/.

An upload is untrusted: every member is checked (no links, no absolute
paths, no '..', no devices) and counted against the limits below while it is
read, so a hostile archive is refused before it fills memory or disk.
"""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import EngineError

MAX_UPLOAD_BYTES = 200 * 1024**2
MAX_UNPACKED_BYTES = 512 * 1024**2
MAX_FILES = 20_000
# A tar's extended headers (GNU long names and link names, pax records) are
# read whole into memory by tarfile: each is capped before it is read, and
# each counts as a member and its bytes as unpacked bytes.
MAX_HEADER_BYTES = 64 * 1024
MAX_PATH = 4096
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)


class BadContext(EngineError):
    """An upload that cannot be a build context; the message says why."""


@dataclass
class _Member:
    name: str  # inside the context, cleaned
    is_dir: bool
    executable: bool
    size: int
    mtime: float
    open: Callable[[], BinaryIO]


def _clean(name: str) -> str:
    """The path inside the context; BadContext for one that could leave it."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise BadContext(f"The archive has a path longer than {MAX_PATH} bytes ({name[:60]}…).")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BadContext(f"The archive has an absolute path ({name}); a build context holds relative ones.")
    parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
    if ".." in parts:
        raise BadContext(f"The archive has a path with '..' ({name}); it cannot be a build context.")
    return "/".join(parts)


def _limits(count: int, total: int) -> None:
    if count > MAX_FILES:
        raise BadContext(f"The archive has more than {MAX_FILES} files; a build context should be small.")
    if total > MAX_UNPACKED_BYTES:
        raise BadContext(f"The archive unpacks to more than {MAX_UNPACKED_BYTES // 1024**2} MiB.")


class _CountedTarInfo(tarfile.TarInfo):
    """A header that counts, and caps, the extended headers before tarfile reads them whole."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type in _EXTENDED:
            if self.size > MAX_HEADER_BYTES:
                raise BadContext(
                    f"The archive has a long-name or pax header of {self.size} bytes "
                    f"(at most {MAX_HEADER_BYTES // 1024} KiB)."
                )
            # Set here too: tarfile reads the first member while it opens the archive.
            seen = archive.__dict__.setdefault("lattice_seen", [0, 0])
            seen[0], seen[1] = seen[0] + 1, seen[1] + tarfile.BLOCKSIZE + self.size
            _limits(*seen)
        return super()._proc_member(archive)


def _tar_members(archive: tarfile.TarFile) -> Iterator[_Member]:
    # [members and extended headers, bytes]: the headers' share is counted as they are read.
    seen = archive.__dict__.setdefault("lattice_seen", [0, 0])
    with tempfile.TemporaryDirectory() as nowhere:  # empty: the data filter's checks stay lexical
        for member in archive:  # one header at a time: stops at the first one over a limit
            if member.issym() or member.islnk():
                raise BadContext(
                    f"The archive has a link ({member.name}); upload the file itself, links are not accepted."
                )
            if not (member.isdir() or member.isfile()) or member.issparse():
                raise BadContext(f"The archive has a device or pipe ({member.name}); only files and folders.")
            seen[0], seen[1] = seen[0] + 1, seen[1] + tarfile.BLOCKSIZE + member.size
            _limits(*seen)
            name = _clean(member.name)
            try:  # Python's own rules for unpacking untrusted archives, on top of ours
                tarfile.data_filter(member, nowhere)
            except tarfile.FilterError as exc:
                raise BadContext(f"The archive has a member that cannot be unpacked safely: {exc}") from exc
            yield _Member(
                name,
                member.isdir(),
                bool(member.mode & 0o111),
                member.size,
                member.mtime,
                lambda member=member: archive.extractfile(member),
            )


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    count = total = 0
    for info in archive.infolist():
        mode = info.external_attr >> 16  # unix mode, when the zip was made on unix
        if mode & 0o170000 == 0o120000:
            raise BadContext(
                f"The archive has a link ({info.filename}); upload the file itself, links are not accepted."
            )
        # A member's declared size caps what reading it returns (zipfile checks it).
        count, total = count + 1, total + info.file_size
        _limits(count, total)
        yield _Member(
            _clean(info.filename),
            info.is_dir(),
            bool(mode & 0o111),
            info.file_size,
            time.mktime((*info.date_time, 0, 0, -1)),
            lambda info=info: archive.open(info),
        )


def context_from_upload(upload: BinaryIO, filename: str, out: BinaryIO) -> int:
    """Write a tar build context from an uploaded .tar(.gz) or .zip to ``out``; the file count.

    The archive must hold a Dockerfile at its top, or in its single top-level
    folder (as archives made by "compress this folder" are). Only files and
    folders: links, absolute paths and '..' are refused. Modes become 0644,
    or 0755 for what was executable, so every file is readable in the image.
    """
    upload.seek(0, io.SEEK_END)
    if upload.tell() > MAX_UPLOAD_BYTES:
        raise BadContext(f"The upload is over {MAX_UPLOAD_BYTES // 1024**2} MiB.")
    upload.seek(0)
    try:
        if filename.lower().endswith(".zip"):
            archive: Any = zipfile.ZipFile(upload)
            members_of = _zip_members
        else:
            archive = tarfile.open(fileobj=upload, mode="r:*", tarinfo=_CountedTarInfo)  # noqa: SIM115 (closed below)
            members_of = _tar_members
        with archive:
            members = [m for m in members_of(archive) if m.name and not m.name.startswith("__MACOSX")]
            return _write_context(members, out)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zipfile.LargeZipFile) as exc:
        raise BadContext(f"Cannot read {filename}: use a .tar, .tar.gz or .zip archive ({exc}).") from exc


def _write_context(members: list[_Member], out: BinaryIO) -> int:
    files = {m.name for m in members if not m.is_dir}
    top = ""
    if "Dockerfile" not in files:
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(tops) == 1 and f"{next(iter(tops))}/Dockerfile" in files:
            top = next(iter(tops)) + "/"
        else:
            raise BadContext("The archive has no Dockerfile at its top level.")
    written = 0
    with tarfile.open(fileobj=out, mode="w") as context:
        for member in members:
            name = member.name.removeprefix(top) if top else member.name
            if top and (member.name + "/") == top:
                continue  # the top folder itself
            info = tarfile.TarInfo(name)
            info.mtime = member.mtime
            if member.is_dir:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                context.addfile(info)
                continue
            info.size, info.mode = member.size, 0o755 if member.executable else 0o644
            with member.open() as content:
                context.addfile(info, content)
            written += 1
    return written


def context_from_folder(folder: Path) -> bytes:
    """A tar build context of a folder as it is (images/ holds only trusted ones)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as context:
        for path in sorted(folder.rglob("*")):
            context.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return out.getvalue()
