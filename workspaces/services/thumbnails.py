"""Small pictures of running screens for the teacher's class grid.

The worker takes them (it runs beside the engine and may open a display's
socket; web replicas need not), one short view-only VNC connection per
picture, and leaves them in Redis. A page asking for a picture gets the last
one at once and, when it is older than MAX_AGE, sets off one new capture:
however many teachers and tabs ask, a screen is read at most once every few
seconds, so thirty students cost the server a few frames a second, not
thirty live streams.
"""

from __future__ import annotations

import time

from django.conf import settings

from ..display.rfb import RFBClient, RFBError
from ..display.sockets import DisplayTarget
from ..lib import queue
from ..lib.redis import redis_client
from ..models import Workspace
from .lifecycle import WrongState

MAX_AGE = 4  # seconds a picture counts as current
KEEP = 60  # seconds a picture is kept at all
WIDTH = 320
PICTURE = "lattice:thumbnail:"
CAPTURING = "lattice:thumbnail-capturing:"


def capture(workspace: Workspace) -> bytes:
    """A PNG of the screen now, at most WIDTH pixels wide."""
    endpoint = workspace.engine_state.get("endpoint") or {}
    if not endpoint.get("path"):
        raise WrongState("The workspace has no display yet.")
    try:
        # The view-only password: a thumbnail can never send input. The
        # display is the student's: its size is bounded and the whole
        # capture ends within the deadline, whatever it sends.
        with RFBClient.unix(
            DisplayTarget.from_endpoint(endpoint),
            workspace.vnc_view_password,
            timeout=5,
            deadline=settings.LATTICE_CAPTURE_DEADLINE,
            max_screen=settings.LATTICE_MAX_SCREEN,
        ) as rfb:
            return rfb.frame().png(max_width=WIDTH)
    except (OSError, RFBError) as exc:
        raise WrongState(f"The screen did not answer ({exc}).") from exc


def store(workspace_id: int, png: bytes) -> None:
    key = PICTURE + str(workspace_id)
    with redis_client().pipeline() as pipe:  # one round trip; never a picture without its expiry
        pipe.hset(key, mapping={"png": png, "at": repr(time.time())})
        pipe.expire(key, KEEP)
        pipe.execute()


def latest(workspace_id: int) -> tuple[bytes | None, float]:
    """The last picture and its age in seconds (None and infinity when there is none)."""
    stored = redis_client().hgetall(PICTURE + str(workspace_id))
    if not stored:
        return None, float("inf")
    return stored[b"png"], time.time() - float(stored[b"at"])


def refresh(workspace_id: int) -> bool:
    """Set off one capture unless one is under way; True when this call did."""
    if not redis_client().set(CAPTURING + str(workspace_id), "1", nx=True, ex=10):
        return False
    # To its own queue, dropped unrun once stale (settings.CELERY_TASK_ROUTES, _ANNOTATIONS).
    queue.now("workspaces.tasks.workspace.capture_thumbnail", workspace_id)
    return True


def captured(workspace_id: int) -> None:
    redis_client().delete(CAPTURING + str(workspace_id))


def picture(workspace_id: int, wait: float = 3.0) -> bytes | None:
    """A current-enough picture for a page: the last one, or the first one if it comes within ``wait``."""
    png, age = latest(workspace_id)
    if age > MAX_AGE:
        refresh(workspace_id)
    deadline = time.monotonic() + wait
    while png is None and time.monotonic() < deadline:
        time.sleep(0.1)
        png, _ = latest(workspace_id)
    return png
