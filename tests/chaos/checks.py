"""What must hold once Lattice has recovered from a crash: the issue's four promises.

Nothing in a transient state, nothing on the engine that no workspace owns,
no display token that opens a stopped workspace, and every file users wrote
to /data as they wrote it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import secrets
import tarfile
from dataclasses import dataclass, field

from django.db.models import Q
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.support.e2e import engine_id
from workspaces.display.rfb import RFBClient, RFBError
from workspaces.engine.base import RUNNING
from workspaces.lib.engine_access import backend
from workspaces.models import (
    Broadcast,
    BroadcastState,
    Image,
    ImageState,
    Job,
    JobState,
    Seat,
    SeatState,
    Workspace,
    WorkspaceState,
)

# How the proxy refuses a token (or finds no display behind it).
REFUSED = (InvalidHandshake, ConnectionClosed, RFBError, OSError)


def opens(grant: dict, origin: str) -> bool:
    """Does this display token open a display (through the proxy, with its VNC password)?"""
    try:
        with RFBClient(grant["url"], grant["password"], origin=origin, timeout=10):
            return True
    except REFUSED:
        return False


def transient() -> list[str]:
    """Every workspace, seat, job, saved image and broadcast still on its way somewhere."""
    stuck = [
        f"workspace {w.pk} {'deleting' if w.deleting else w.state} ({w.message or 'no message'})"
        for w in Workspace.objects.filter(
            Q(state__in=(WorkspaceState.PENDING, WorkspaceState.STARTING, WorkspaceState.STOPPING))
            | Q(deleting=True)
        )
    ]
    stuck += [
        f"seat of {s.student.username} in broadcast {s.broadcast_id} {s.state}"
        for s in Seat.objects.filter(state__in=(SeatState.QUEUED, SeatState.STARTING)).select_related(
            "student"
        )
    ]
    stuck += [
        f"job {j.pk} ({j.kind}) {j.state}"
        for j in Job.objects.filter(state__in=(JobState.QUEUED, JobState.RUNNING))
    ]
    stuck += [f"saved image {i.slug} saving" for i in Image.objects.filter(state=ImageState.SAVING)]
    stuck += [
        f"broadcast {b.pk} {b.state}"
        for b in Broadcast.objects.filter(state__in=(BroadcastState.QUEUED, BroadcastState.RUNNING))
    ]
    return stuck


def orphans() -> list[str]:
    """Engine objects (containers, networks, X volumes, socket folders) of the run no workspace explains.

    The engine lists a workspace for any of them (a network or a socket
    folder alone counts as "missing"); each must have its row, and only a
    running workspace may have running containers.
    """
    found = []
    for engine_name, state in backend().list_workspaces().items():
        row = Workspace.objects.filter(engine_id=engine_name).first()
        if row is None:
            found.append(f"engine workspace {engine_name} ({state}) has no workspace row")
        elif state == RUNNING and row.state != WorkspaceState.RUNNING:
            found.append(f"workspace {row.pk} is {row.state} but its containers run")
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Files:
    """Files written into users' /data (as the user, in a running container), by sha256."""

    written: dict[tuple[int, str], str] = field(default_factory=dict)

    def write(self, workspace: Workspace, name: str, size: int) -> bool:
        """Random bytes into /data/chaos/<name> through the display container; whether it was written.

        A workspace that stops meanwhile refuses the exec: nothing is recorded then.
        """
        data = secrets.token_bytes(size)
        path = f"chaos/{name}"
        # The bytes go in on the command line (small files): exec has no stdin here.
        encoded = base64.b64encode(data).decode()
        script = (
            f"mkdir -p /data/chaos && printf '%s' {encoded} | base64 -d > /data/{path}.part"
            f" && mv /data/{path}.part /data/{path} && sha256sum /data/{path}"
        )
        try:
            code, out = backend().exec(engine_id(workspace.pk), "display", ["sh", "-c", script])
        except Exception:
            return False
        if code != 0:
            return False
        assert out.decode().split()[0] == sha256(data), f"{path}: written wrong at once: {out!r}"
        self.written[(workspace.owner_id, path)] = sha256(data)
        return True

    def changed(self) -> list[str]:
        """Every recorded file that is missing or differs, read from the owners' data volumes."""
        wrong = []
        for owner in sorted({owner for owner, _ in self.written}):
            archive = io.BytesIO()
            backend().export_data(owner, archive)
            archive.seek(0)
            found = {}
            with tarfile.open(fileobj=archive) as tar:
                for member in tar:
                    name = os.path.normpath(member.name)
                    if member.isfile() and name.startswith("chaos/"):
                        found[name] = sha256(tar.extractfile(member).read())
            for (who, path), digest in self.written.items():
                if who == owner and found.get(path) != digest:
                    wrong.append(f"user {owner}: /data/{path} {'changed' if path in found else 'is gone'}")
        return wrong


@dataclass
class Grants:
    """Display tokens asked for running workspaces and not used: none may open a stopped one."""

    origin: str
    unused: list[tuple[int, dict]] = field(default_factory=list)
    tried: int = 0  # tokens of stopped or deleted workspaces tried so far

    def add(self, workspace_id: int, grant: dict) -> None:
        self.unused.append((workspace_id, grant))

    def opening_stopped(self) -> list[str]:
        """Use each token whose workspace no longer runs (or is gone); those that still open a display."""
        opened, keep = [], []
        for workspace_id, grant in self.unused:
            if Workspace.objects.visible().filter(pk=workspace_id, state=WorkspaceState.RUNNING).exists():
                keep.append((workspace_id, grant))
                continue
            state = (
                Workspace.objects.filter(pk=workspace_id).values_list("state", flat=True).first() or "gone"
            )
            self.tried += 1
            if opens(grant, self.origin):
                opened.append(f"a display token of workspace {workspace_id} ({state}) still opens it")
        self.unused = keep
        return opened
