"""What a teacher does to students' screens, and what the students are told.

View, take control, show their own screen. Tokens come from the same
single-use display-token mechanism as a student's own. A "view" token's
connection has its input dropped by the display proxy, and carries the VNC
view-only password, which the VNC server enforces too: neither a watching
teacher nor a student in demo mode can send input that reaches a desktop.
Tokens for a demo or a control session carry that scope: ending the demo or
the session closes those connections and no others.

What a student must know outlives any one page: who controls their screen, a
workspace a broadcast opened for them, a demo under way. It is kept in Redis
and read back by every page (``pending``), so a reload or a page opened a
moment too late still shows it.
"""

from __future__ import annotations

import json
import re
import time

from . import display_tokens, lifecycle, refusals
from .events import publish, publish_group, user_group
from .models import Classroom, Seat, User, Workspace, WorkspaceState

DEMO_KEY = "lattice:demo:"
CONTROL_KEY = "lattice:control:"
NOTICES_KEY = "lattice:notices:"
# A control session lives while its page renews it (viewer.js does every
# 30 seconds); one whose page went away without a word ends by itself, and its
# connections with it, so the student's notice never outlasts the control
# nor the control the notice.
CONTROL_TTL = 90
NOTICE_TTL = 24 * 3600
SESSION = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BadSession(refusals.BadInput):
    """A control session id that is not ours (HTTP 400)."""


# --- take control ---------------------------------------------------------------


def _control_member(session: str, teacher: str) -> str:
    return json.dumps([session, teacher])


def _control_key(workspace_id: int) -> str:
    """The sorted set of a screen's control sessions (member -> when it expires)."""
    return f"{CONTROL_KEY}{workspace_id}"


def _end_expired(client, workspace_id: int) -> int:
    """End the screen's control sessions that expired, connections and all; how many this call ended."""
    key = _control_key(workspace_id)
    ended = 0
    for member in client.zrangebyscore(key, "-inf", time.time()):
        session, teacher = json.loads(member)
        display_tokens.revoke_scope(client, _scope(workspace_id, teacher, session))
        ended += client.zrem(key, member)
    return ended


def _controllers(client, workspace_id: int) -> list[str]:
    """Who controls the screen now; sessions that expired are ended first."""
    _end_expired(client, workspace_id)
    return sorted({json.loads(m)[1] for m in client.zrange(_control_key(workspace_id), 0, -1)})


def _scope(workspace_id: int, teacher: str, session: str) -> str:
    return f"control:{workspace_id}:{teacher}:{session}"


def control_scope(workspace: Workspace, teacher: User, session: str) -> str:
    """The display-token scope of one control session: ending it closes its connections."""
    return _scope(workspace.pk, teacher.username, check_session(session))


def expire_control_sessions() -> int:
    """End control sessions whose page stopped renewing them; how many screens changed."""
    client = lifecycle.redis_client()
    changed = 0
    for raw in client.scan_iter(match=_control_key("*")):
        workspace_id = int(raw.decode().removeprefix(CONTROL_KEY))
        if _end_expired(client, workspace_id):
            workspace = Workspace.objects.filter(pk=workspace_id).first()
            if workspace is not None:
                _announce_control(workspace, _controllers(client, workspace_id))
            changed += 1
    return changed


def demo_scope(classroom: Classroom) -> str:
    return f"demo:{classroom.pk}"


def check_session(session: str) -> str:
    if not SESSION.fullmatch(session or ""):
        raise BadSession("A control session is 1 to 64 letters, digits, '-' or '_'.")
    return session


def start_control(teacher: User, workspace: Workspace, session: str = "api") -> None:
    """Tell the student, visibly, that a teacher controls their screen.

    Each viewer page is one session (a reconnect renews it): the notice lasts
    while any session does, so closing one of two teacher tabs ends nothing.
    """
    client = lifecycle.redis_client()
    key = _control_key(workspace.pk)
    client.zadd(key, {_control_member(check_session(session), teacher.username): time.time() + CONTROL_TTL})
    # The set outlives its members, so an expired session is still found and ended.
    client.expire(key, 24 * 3600)
    _announce_control(workspace, _controllers(client, workspace.pk))


def end_control(workspace: Workspace, teacher: User, session: str = "api") -> None:
    """End one session, and its connections; the student hears who still controls their screen."""
    client = lifecycle.redis_client()
    client.zrem(_control_key(workspace.pk), _control_member(check_session(session), teacher.username))
    display_tokens.revoke_scope(client, control_scope(workspace, teacher, session))
    _announce_control(workspace, _controllers(client, workspace.pk))


def controlled_by(workspace: Workspace) -> str | None:
    names = _controllers(lifecycle.redis_client(), workspace.pk)
    return ", ".join(names) or None


def _control_notice(workspace: Workspace, names: list[str]) -> dict:
    if names:
        return {
            "type": "control",
            "active": True,
            "by": ", ".join(names),
            "workspace": workspace.pk,
            "message": f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} controlling your screen.",
        }
    return {
        "type": "control",
        "active": False,
        "workspace": workspace.pk,
        "message": "Your teacher no longer controls your screen.",
    }


def _announce_control(workspace: Workspace, names: list[str]) -> None:
    publish(workspace.owner_id, _control_notice(workspace, names))


# --- a broadcast opened a workspace ---------------------------------------------


def notify_opened(seat: Seat) -> None:
    """Tell the student their teacher started a workspace for them, until they open or dismiss it."""
    sent = seat.broadcast
    notice = {
        "type": "notice",
        "id": seat.workspace_id,
        "workspace": seat.workspace_id,
        "message": f"{sent.teacher.username} started {sent.display.title} for {sent.classroom.name}.",
        "open": f"/workspaces/{seat.workspace_id}/",
    }
    client = lifecycle.redis_client()
    key = f"{NOTICES_KEY}{seat.student_id}"
    client.hset(key, str(seat.workspace_id), json.dumps(notice))
    client.expire(key, NOTICE_TTL)
    publish(seat.student_id, notice)


def dismiss(user: User, notice_id: int) -> None:
    lifecycle.redis_client().hdel(f"{NOTICES_KEY}{user.pk}", str(notice_id))


def pending(user: User) -> dict:
    """Everything a page must show this user at load: notices, control, demos."""
    client = lifecycle.redis_client()
    key = f"{NOTICES_KEY}{user.pk}"
    stored = {int(k): json.loads(v) for k, v in client.hgetall(key).items()}
    running = {
        ws.pk: ws for ws in Workspace.objects.visible().filter(owner=user, state=WorkspaceState.RUNNING)
    }
    gone = [str(pk) for pk in stored if pk not in running]
    if gone:
        client.hdel(key, *gone)  # stopped or deleted since: nothing left to open
    control = []
    for ws in running.values():
        names = _controllers(client, ws.pk)
        if names:
            control.append(_control_notice(ws, names))
    demos = [
        _demo_event(classroom, active=True)
        for classroom in user.classrooms.all()
        if client.exists(f"{DEMO_KEY}{classroom.pk}")
    ]
    return {
        "notices": [notice for pk, notice in sorted(stored.items()) if pk in running],
        "control": control,
        "demos": demos,
    }


# --- show my screen ---------------------------------------------------------------


def start_demo(classroom: Classroom, workspace: Workspace) -> None:
    if workspace.state != WorkspaceState.RUNNING:
        raise lifecycle.WrongState("Start the workspace you want to show first; it must be running.")
    lifecycle.redis_client().set(
        f"{DEMO_KEY}{classroom.pk}", json.dumps({"workspace": workspace.pk}), ex=8 * 3600
    )
    _announce_demo(classroom, active=True)


def end_demo(classroom: Classroom) -> None:
    client = lifecycle.redis_client()
    client.delete(f"{DEMO_KEY}{classroom.pk}")
    # The students' demo tokens, and their open connections, end here; the
    # teacher's own connections to the workspace are not in the scope and stay.
    display_tokens.revoke_scope(client, demo_scope(classroom))
    _announce_demo(classroom, active=False)


def demo_workspace(classroom: Classroom) -> Workspace | None:
    raw = lifecycle.redis_client().get(f"{DEMO_KEY}{classroom.pk}")
    if raw is None:
        return None
    return Workspace.objects.visible().filter(pk=json.loads(raw)["workspace"]).first()


def _demo_event(classroom: Classroom, active: bool) -> dict:
    return {
        "type": "demo",
        "active": active,
        "classroom": classroom.pk,
        "name": classroom.name,
        "open": f"/classrooms/{classroom.pk}/demo/",
    }


def _announce_demo(classroom: Classroom, active: bool) -> None:
    event = _demo_event(classroom, active)
    for student_id in classroom.students.values_list("pk", flat=True):
        publish_group(user_group(student_id), event)


def demo_token(classroom: Classroom, user: User | None = None) -> tuple[str, str]:
    """A view-only token to the demo for one student (``user``); WrongState when no demo runs."""
    workspace = demo_workspace(classroom)
    if workspace is None:
        raise lifecycle.WrongState("Your teacher is not showing a screen right now.")
    return lifecycle.issue_display_token(workspace, "view", scopes=(demo_scope(classroom),), user=user)
