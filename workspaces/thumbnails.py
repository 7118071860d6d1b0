"""Small pictures of running screens for the teacher's class grid.

One short view-only VNC connection per picture, at most one picture per
screen every MAX_AGE seconds (cached), so thirty students cost the server a
few frames a second, not thirty live streams.
"""

from __future__ import annotations

from .lifecycle import WrongState
from .models import Workspace
from .rfb import RFBClient, RFBError

MAX_AGE = 4  # seconds
WIDTH = 320


def capture(workspace: Workspace) -> bytes:
    endpoint = workspace.engine_state.get("endpoint") or {}
    if not endpoint.get("path"):
        raise WrongState("The workspace has no display yet.")
    try:
        # The view-only password: a thumbnail can never send input.
        with RFBClient.unix(endpoint["path"], workspace.vnc_view_password, timeout=5) as rfb:
            return rfb.frame().png(max_width=WIDTH)
    except (OSError, RFBError) as exc:
        raise WrongState(f"The screen did not answer ({exc}).") from exc
