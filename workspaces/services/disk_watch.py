"""The disk watch: a workspace whose container wrote more than its image's limit is stopped.

The storage driver (fuse-overlayfs) has no size option, so nothing stops a
student's `dd` from filling the host's disk through a container's own
filesystem. The worker measures every running container's writable layer
(everything written outside its volumes, so never /data: see
engine/docker_usage.py) every LATTICE_DISK_WATCH_INTERVAL seconds, and stops a workspace one
of whose containers passed its catalog entry's disk_limit, with a message the
user reads on the dashboard. Stopping keeps the container and its files: the
user starts it again and deletes what they do not need.

The display's socket folder is a host folder the student can write in, outside
every layer (there is no tmpfs per workspace without root mounting it): the
same pass measures it, and more than SOCKET_FOLDER_LIMIT there stops the
workspace too. /tmp/.X11-unix is a size-capped tmpfs (engine/docker_backend.py).

/data has no quota here; it gets one with the cloud-backed data volumes.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from django.conf import settings

from ..engine.base import ContainerDisk
from ..engine.specs import size_bytes
from ..lib.engine_access import backend
from ..lib.redis import redis_client
from ..models import Image, Workspace, WorkspaceState
from . import lifecycle

logger = logging.getLogger(__name__)

LOCK = "lattice:disk-watch"
# A container the engine could not measure (its walk outlasted the client's
# timeout: a student can make it slow with very many files) is counted here;
# this many passes in a row and its workspace is stopped, so that making the
# measure fail is never a way around the limit.
UNMEASURED = "lattice:disk-unmeasured:"
UNMEASURED_PASSES = 2
# A pass runs on the default queue, beside launches: it starts no measure that
# could end after this many seconds (a student can make each container's walk
# take its whole bound). The containers it did not reach are kept here and
# measured first by the next pass.
PASS_SECONDS = 60.0
NOT_REACHED = "lattice:disk-not-reached"
DEFAULT_LIMIT = Image._meta.get_field("disk_limit").default


# The display's socket folder (a host folder, outside every layer) holds one
# socket; what a student puts there beside it must stay small.
SOCKET_FOLDER_LIMIT = 16 * 1024**2


def readable(size: int) -> str:
    """4.2 GB, 40 MB, 512 KB: sizes for people (binary units, as the limits are)."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def limit_of(image: Image) -> int:
    try:
        return size_bytes(image.disk_limit)
    except ValueError:
        # A hand-edited row: the default still protects the host.
        logger.warning("image %s: bad disk_limit %r, using %s", image.slug, image.disk_limit, DEFAULT_LIMIT)
        return size_bytes(DEFAULT_LIMIT)


def stop_message(image: Image, written: int, limit: int, at_least: bool = False) -> str:
    amount = f"at least {readable(written)}" if at_least else readable(written)
    return (
        f"Stopped: the {image.title or image.slug} container wrote {amount} outside /data, "
        f"over its {readable(limit)} limit. Delete files you do not need, or save your work in /data."
    )[:300]


def unmeasured_message(image: Image) -> str:
    return (
        f"Stopped: the {image.title or image.slug} container's files outside /data could not be "
        "measured (too many of them?). Delete files you do not need, or save your work in /data."
    )[:300]


def socket_folder_message(written: int) -> str:
    return (
        f"Stopped: {readable(written)} were written into the display's socket folder "
        f"(/run/lattice-vnc), over its {readable(SOCKET_FOLDER_LIMIT)} limit. "
        "Only the display's own socket belongs there: start the workspace and delete the rest."
    )[:300]


def _unmeasured_again(workspace: Workspace, container: str) -> bool:
    """Count one more pass in a row without a measure; True once it is UNMEASURED_PASSES."""
    key = f"{UNMEASURED}{workspace.engine_id}:{container}"
    with redis_client().pipeline() as pipe:
        pipe.incr(key)
        # Forgotten if the next passes never come (the container stopped meanwhile).
        pipe.expire(key, int(3 * settings.LATTICE_DISK_WATCH_INTERVAL) + 600)
        count, _ = pipe.execute()
    return count >= UNMEASURED_PASSES


def _verdict(workspace: Workspace, image: Image, measured: ContainerDisk) -> str | None:
    """Why this container's workspace must stop, or None."""
    if measured.socket_folder is not None and measured.socket_folder > SOCKET_FOLDER_LIMIT:
        return socket_folder_message(measured.socket_folder)
    limit = limit_of(image)
    # A measure cut short at its bound is a lower bound: over the limit is
    # over it; under it says nothing, so it counts as unmeasured.
    over = measured.written is not None and measured.written > limit
    if not over and (measured.written is None or not measured.complete):
        return unmeasured_message(image) if _unmeasured_again(workspace, measured.container) else None
    redis_client().delete(f"{UNMEASURED}{workspace.engine_id}:{measured.container}")
    return stop_message(image, measured.written, limit, not measured.complete) if over else None


def over_limit(usage: list[ContainerDisk]) -> dict[Workspace, str]:
    """Running workspaces one of whose containers passed its limit, each with the message why."""
    by_workspace: dict[str, list[ContainerDisk]] = defaultdict(list)
    for measured in usage:
        by_workspace[measured.workspace_id].append(measured)
    found: dict[Workspace, str] = {}
    running = (
        Workspace.objects.visible()
        .filter(state=WorkspaceState.RUNNING, engine_id__in=list(by_workspace))
        .select_related("display")
        .prefetch_related("apps")
    )
    for workspace in running:
        images = lifecycle.containers_of(workspace)
        for measured in by_workspace[workspace.engine_id]:
            image = images.get(measured.container)
            verdict = _verdict(workspace, image, measured) if image is not None else None
            if verdict:
                found[workspace] = verdict
                break
    return found


def _measure_all() -> list[ContainerDisk]:
    """This pass's measures, within PASS_SECONDS, last pass's unreached containers first."""
    client = redis_client()
    first = {key.decode() for key in client.smembers(NOT_REACHED)}
    usage = backend().container_disk_usage(seconds=PASS_SECONDS, first=first)
    not_reached = [measured.key for measured in usage if not measured.reached]
    with client.pipeline() as pipe:
        pipe.delete(NOT_REACHED)
        if not_reached:
            pipe.sadd(NOT_REACHED, *not_reached)
            pipe.expire(NOT_REACHED, int(3 * settings.LATTICE_DISK_WATCH_INTERVAL) + 600)
        pipe.execute()
    return [measured for measured in usage if measured.reached]


def watch() -> list[int]:
    """One pass: measure, stop what is over its limit; the ids of the workspaces stopped.

    A measure can take seconds a container (engine/docker_usage.py): a pass
    that outlasts the interval makes the next one skip, never run beside it.
    """
    lock = redis_client().lock(LOCK, timeout=max(600, 3 * settings.LATTICE_DISK_WATCH_INTERVAL))
    if not lock.acquire(blocking=False):
        logger.info("disk watch: the previous pass is still measuring; skipped")
        return []
    try:
        stopped = []
        for workspace, message in over_limit(_measure_all()).items():
            try:
                lifecycle.stop(workspace, reason=message)
            except lifecycle.WrongState:
                continue  # stopped or deleted meanwhile
            logger.warning(
                "disk watch: workspace %s of user %s: %s", workspace.pk, workspace.owner_id, message
            )
            stopped.append(workspace.pk)
        return stopped
    finally:
        lock.release()
