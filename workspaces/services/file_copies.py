"""Copying a folder of one user's /data into another's: a class's starter files, a collect.

Both users' files are brought back first if this engine lacks them (a new
host), under both users' data locks (backups.held): a copy never makes an
empty volume that a restore would then take for the user's own files.
"""

from __future__ import annotations

from ..lib.engine_access import backend
from ..models import User
from . import backups

# What a copied file's "status" may be (engine copy_data); the others are "failed" and "skipped".
WRITTEN = ("copied", "beside", "same")


def copy_folder(src: User, src_path: str, dst: User, dst_path: str) -> list[dict[str, str]]:
    """Copy src's /data/<src_path> into dst's /data/<dst_path>, replacing nothing.

    One entry per file (see the engine's copy_data): links, pipes, sockets
    and devices are skipped and listed, never followed.
    """
    if src.pk != dst.pk and not backend().data_volume_exists(src.pk):
        # The source only has to be there: its lock is taken only to bring it
        # back (checked again under it), never to look, so a class's starter
        # copies neither queue on one teacher's lock nor wait out their backup.
        with backups.held(src):
            backups.bring_back(src)
    # The target's lock is held until the copy is in: it may make the volume.
    with backups.held(dst):
        backups.bring_back(dst)
        return backend().copy_data(src.pk, src_path, dst.pk, dst_path)


def verified(files: list[dict[str, str]]) -> list[dict[str, str]]:
    """The files written whose checksum matches the source's."""
    return [f for f in files if f["status"] in WRITTEN and f["source_sha256"] == f["sha256"]]


def not_copied(files: list[dict[str, str]]) -> list[dict[str, str]]:
    """The files that were meant to be copied and were not, or not as they were."""
    return [
        f
        for f in files
        if f["status"] == "failed" or (f["status"] in WRITTEN and f["source_sha256"] != f["sha256"])
    ]
