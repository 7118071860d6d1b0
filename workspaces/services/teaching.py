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
import logging
import re
import time
from dataclasses import dataclass

from ..display import tokens as display_tokens
from ..lib import queue, refusals
from ..lib.events import publish, publish_group, user_group
from ..lib.redis import redis_client
from ..models import Classroom, Seat, User, Workspace, WorkspaceState
from . import audit, lifecycle

logger = logging.getLogger(__name__)

DEMO_KEY = "lattice:demo:"
CONTROL_KEY = "lattice:control:"
NOTICES_KEY = "lattice:notices:"
# A session (control, view, or the class grid's thumbnails) lives while its
# page renews it (viewer.js every 30 seconds, the grid with every picture);
# one whose page went away without a word ends by itself, and its
# connections with it, so the student's indicator never outlasts the session
# nor the session the indicator.
CONTROL_TTL = 90
NOTICE_TTL = 24 * 3600
SESSION = re.compile(r"[A-Za-z0-9_-]{1,64}")
# How someone reaches a student's screen, strongest first.
CONTROL, VIEW, GRID = "control", "view", "grid"
MODES = (CONTROL, VIEW, GRID)


class BadSession(refusals.BadInput):
    """A control session id that is not ours (HTTP 400)."""


class SessionOver(refusals.Conflict):
    """A page's session was released: a late request of that page starts nothing (HTTP 409)."""


ENDED_KEY = "lattice:session-ended:"
# The session every API client uses when it names none: it may start again at once.
API_SESSION = "api"


# --- watching and controlling a student's screen ------------------------------------
#
# One sorted set per screen holds every session on it (member -> when it
# expires): who, which page, how (control, view, grid) and through which
# class. The student's indicator is computed from it; every session's start
# and end is written to the audit log.


@dataclass(frozen=True)
class Session:
    session: str
    teacher: str
    mode: str
    classroom: int | None

    @property
    def member(self) -> str:
        return json.dumps([self.session, self.teacher, self.mode, self.classroom])

    @classmethod
    def parse(cls, raw: bytes | str) -> Session:
        session, teacher, mode, classroom = json.loads(raw)
        return cls(session, teacher, mode, classroom)


def _parsed(client, workspace_id: int, members: list[bytes]) -> list[Session]:
    """The sessions these set members are; a member that is none is dropped from the set.

    An older version stored other shapes (e.g. a 2-element [session, teacher]):
    after a deploy they must not break every read of the screen's sessions.
    """
    sessions = []
    for raw in members:
        try:
            sessions.append(Session.parse(raw))
        except (ValueError, TypeError):
            client.zrem(_control_key(workspace_id), raw)
            logger.warning(
                "workspace %s: dropped a session entry this version cannot read: %r", workspace_id, raw
            )
    return sessions


def _control_key(workspace_id: int) -> str:
    """The sorted set of a screen's sessions (member -> when it expires)."""
    return f"{CONTROL_KEY}{workspace_id}"


def _scope(workspace_id: int, teacher: str, session: str, mode: str = CONTROL) -> str:
    return f"{mode}:{workspace_id}:{teacher}:{session}"


def session_scope(workspace: Workspace, teacher: User, session: str, mode: str) -> str:
    """The display-token scope of one session: ending it closes its connections."""
    return _scope(workspace.pk, teacher.username, check_session(session), mode)


def control_scope(workspace: Workspace, teacher: User, session: str) -> str:
    return session_scope(workspace, teacher, session, CONTROL)


def _ended(client, workspace_id: int, ended: list[Session], reason: str) -> None:
    """What follows a session's end: its connections close, the log says so, a control rotates passwords."""
    workspace = Workspace.objects.filter(pk=workspace_id).select_related("owner").first()
    for one in ended:
        display_tokens.revoke_scope(client, _scope(workspace_id, one.teacher, one.session, one.mode))
        _log(audit.SESSION_END, workspace, one, workspace_id, reason=reason)
    still = _parsed(client, workspace_id, client.zrange(_control_key(workspace_id), 0, -1))
    last_control = not any(one.mode == CONTROL for one in still)
    if workspace is not None and last_control and any(one.mode == CONTROL for one in ended):
        # The teachers' pages held the full-control password: once no control
        # is left, it opens nothing from now on (while one is, it is needed).
        rotate_vnc_passwords(workspace)


def _log(action: str, workspace: Workspace | None, one: Session, workspace_id: int, **detail) -> None:
    audit.record(
        action,
        actor=User.objects.filter(username=one.teacher).first(),
        actor_name=one.teacher,
        subject=workspace.owner if workspace is not None else None,
        mode=one.mode,
        workspace=workspace,
        classroom=one.classroom,
        session=one.session,
        workspace_id=workspace_id,
        **detail,
    )


def _remove(client, workspace_id: int, members: list[Session], reason: str) -> int:
    """End these sessions (those still there); how many this call ended."""
    key = _control_key(workspace_id)
    ended = [one for one in members if client.zrem(key, one.member)]
    if ended:
        _ended(client, workspace_id, ended, reason)
    return len(ended)


def _end_expired(client, workspace_id: int) -> int:
    """End the screen's sessions that expired, connections and all; how many this call ended."""
    expired = _parsed(
        client, workspace_id, client.zrangebyscore(_control_key(workspace_id), "-inf", time.time())
    )
    return _remove(client, workspace_id, expired, "not renewed") if expired else 0


def _sessions(client, workspace_id: int) -> list[Session]:
    """Every live session on the screen; sessions that expired are ended first."""
    _end_expired(client, workspace_id)
    return _parsed(client, workspace_id, client.zrange(_control_key(workspace_id), 0, -1))


def _controllers(client, workspace_id: int) -> list[str]:
    """Who controls the screen now."""
    return sorted({one.teacher for one in _sessions(client, workspace_id) if one.mode == CONTROL})


def expire_control_sessions() -> int:
    """End sessions whose page stopped renewing them; how many screens changed."""
    client = redis_client()
    changed = 0
    for raw in client.scan_iter(match=_control_key("*")):
        workspace_id = int(raw.decode().removeprefix(CONTROL_KEY))
        if _end_expired(client, workspace_id):
            workspace = Workspace.objects.filter(pk=workspace_id).first()
            if workspace is not None:
                _announce(workspace, _sessions(client, workspace_id))
            changed += 1
    return changed


def demo_scope(classroom: Classroom) -> str:
    return f"demo:{classroom.pk}"


def check_session(session: str) -> str:
    if not SESSION.fullmatch(session or ""):
        raise BadSession("A control session is 1 to 64 letters, digits, '-' or '_'.")
    return session


def start_session(
    teacher: User, workspace: Workspace, mode: str, session: str = "api", classroom: Classroom | None = None
) -> None:
    """Start (or renew) one page's session on a student's screen; the student sees it at once.

    Each page is one session (a reconnect or a renewal extends it): the
    indicator lasts while any session does, so closing one of two teacher
    tabs ends nothing.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    client = redis_client()
    check_open(workspace, teacher, session)
    key = _control_key(workspace.pk)
    one = Session(check_session(session), teacher.username, mode, classroom.pk if classroom else None)
    added = client.zadd(key, {one.member: time.time() + CONTROL_TTL})
    if added:
        _log(audit.SESSION_START, workspace, one, workspace.pk)
    # The set outlives its members, so an expired session is still found and ended.
    client.expire(key, 24 * 3600)
    if _end_expired(client, workspace.pk) or added:  # a renewal changes nothing the student sees
        _announce(workspace, _sessions(client, workspace.pk))


def end_session(
    workspace: Workspace,
    teacher: User,
    session: str = "api",
    mode: str | None = None,
    reason: str = "released",
) -> None:
    """End one page's session(s) (in ``mode``, or any), and their connections.

    A page's session, once released, stays over: a request the page sent just
    before it went away (a reconnect, a picture) must not start it again, or
    the student would be told they are watched by a page that is gone.
    """
    client = redis_client()
    check_session(session)
    if session != API_SESSION:
        client.set(_ended_key(workspace, teacher.username, session), "1", ex=2 * CONTROL_TTL)
    expired = _end_expired(client, workspace.pk)
    mine = [
        one
        for one in _sessions(client, workspace.pk)
        if one.teacher == teacher.username and one.session == session and mode in (None, one.mode)
    ]
    removed = _remove(client, workspace.pk, mine, reason)
    # A connection of this session whose set member expired still closes.
    for each in [mode] if mode else MODES:
        display_tokens.revoke_scope(client, _scope(workspace.pk, teacher.username, session, each))
    if expired or removed:  # otherwise the student's indicator is already right
        _announce(workspace, _sessions(client, workspace.pk))


# The grid: each page (session) remembers whose screens it showed, so closing
# it ends those sessions only, not one per workspace the class ever had.
GRID_KEY = "lattice:grid:"


def _grid_key(teacher: User, classroom: Classroom, session: str) -> str:
    return f"{GRID_KEY}{classroom.pk}:{teacher.username}:{check_session(session)}"


def start_grid(teacher: User, workspace: Workspace, session: str, classroom: Classroom) -> None:
    """Start (or renew) a grid page's session on a student's screen, and remember the screen.

    The screen is remembered before the released mark is looked at, and
    end_grid marks before it reads: a picture racing the page's release is
    either refused here or found (and ended) there.
    """
    client = redis_client()
    key = _grid_key(teacher, classroom, session)
    client.sadd(key, workspace.pk)
    client.expire(key, 24 * 3600)
    if session != API_SESSION and client.exists(f"{key}:ended"):
        raise SessionOver("This page's view of the screen has ended: open the screen again.")
    start_session(teacher, workspace, GRID, session, classroom)


def end_grid(teacher: User, classroom: Classroom, session: str) -> int:
    """The grid page closed: end its sessions on the screens it showed; how many screens."""
    client = redis_client()
    key = _grid_key(teacher, classroom, session)
    if session != API_SESSION:
        client.set(f"{key}:ended", "1", ex=2 * CONTROL_TTL)
    shown = [int(pk) for pk in client.smembers(key)]
    client.delete(key)
    workspaces = Workspace.objects.filter(pk__in=shown)
    for workspace in workspaces:
        end_session(workspace, teacher, session, GRID)
    return len(workspaces)


def _ended_key(workspace: Workspace, teacher: str, session: str) -> str:
    # By engine id, never reused (row ids may be): an old mark never touches a new workspace.
    return f"{ENDED_KEY}{workspace.engine_id}:{teacher}:{session}"


def check_open(workspace: Workspace, teacher: User, session: str) -> None:
    """SessionOver when this page's session was released (call before issuing its token)."""
    over = _ended_key(workspace, teacher.username, check_session(session))
    if session != API_SESSION and redis_client().exists(over):
        raise SessionOver("This page's view of the screen has ended: open the screen again.")


def end_class_sessions(workspace: Workspace, classroom: Classroom, reason: str) -> int:
    """End every session on this screen that came through this class (the student left it)."""
    client = redis_client()
    through = [one for one in _sessions(client, workspace.pk) if one.classroom == classroom.pk]
    ended = _remove(client, workspace.pk, through, reason)
    _announce(workspace, _sessions(client, workspace.pk))
    return ended


def start_control(
    teacher: User, workspace: Workspace, session: str = "api", classroom: Classroom | None = None
) -> None:
    start_session(teacher, workspace, CONTROL, session, classroom)


def end_control(workspace: Workspace, teacher: User, session: str = "api") -> None:
    end_session(workspace, teacher, session, CONTROL)


def controlled_by(workspace: Workspace) -> str | None:
    names = _controllers(redis_client(), workspace.pk)
    return ", ".join(names) or None


def watched_by(workspace: Workspace) -> dict[str, list[str]]:
    """Who reaches the screen now, by mode (only modes someone uses)."""
    sessions = _sessions(redis_client(), workspace.pk)
    found = {mode: sorted({one.teacher for one in sessions if one.mode == mode}) for mode in MODES}
    return {mode: names for mode, names in found.items() if names}


def _who(names: list[str]) -> str:
    return f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'}"


def _control_notice(workspace: Workspace, sessions: list[Session]) -> dict:
    by_mode = {mode: sorted({one.teacher for one in sessions if one.mode == mode}) for mode in MODES}
    said = {
        CONTROL: lambda names: f"{_who(names)} controlling your screen.",
        VIEW: lambda names: f"{_who(names)} watching your screen.",
        GRID: lambda names: f"Your teacher can see your screen in the class grid ({', '.join(names)}).",
    }
    shown = [mode for mode in MODES if by_mode[mode]]
    if shown:
        return {
            "type": "control",
            "active": True,
            "by": ", ".join(sorted({one.teacher for one in sessions})),
            "mode": shown[0],
            "workspace": workspace.pk,
            "message": " ".join(said[mode](by_mode[mode]) for mode in shown),
        }
    return {
        "type": "control",
        "active": False,
        "workspace": workspace.pk,
        "message": "Your teacher no longer controls your screen, nor watches it.",
    }


def _announce(workspace: Workspace, sessions: list[Session]) -> None:
    publish(workspace.owner_id, _control_notice(workspace, sessions))


def rotate_vnc_passwords(workspace: Workspace) -> None:
    """New VNC passwords for the screen, once the current transaction commits (the worker applies them)."""
    queue.later("workspaces.tasks.classroom.rotate_vnc_passwords", workspace.pk)


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
    client = redis_client()
    key = f"{NOTICES_KEY}{seat.student_id}"
    client.hset(key, str(seat.workspace_id), json.dumps(notice))
    client.expire(key, NOTICE_TTL)
    publish(seat.student_id, notice)


def dismiss(user: User, notice_id: int) -> None:
    redis_client().hdel(f"{NOTICES_KEY}{user.pk}", str(notice_id))


def pending(user: User) -> dict:
    """Everything a page must show this user at load: notices, control, demos."""
    client = redis_client()
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
        sessions = _sessions(client, ws.pk)
        if sessions:
            control.append(_control_notice(ws, sessions))
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
    redis_client().set(f"{DEMO_KEY}{classroom.pk}", json.dumps({"workspace": workspace.pk}), ex=8 * 3600)
    _log_demo(audit.DEMO_START, classroom, workspace)
    _announce_demo(classroom, active=True)


def end_demo(classroom: Classroom) -> None:
    client = redis_client()
    shown = demo_workspace(classroom)
    client.delete(f"{DEMO_KEY}{classroom.pk}")
    # The students' demo tokens, and their open connections, end here; the
    # teacher's own connections to the workspace are not in the scope and stay.
    display_tokens.revoke_scope(client, demo_scope(classroom))
    if shown is not None:
        _log_demo(audit.DEMO_END, classroom, shown)
        # The whole class had its view-only password: it opens nothing from now on.
        rotate_vnc_passwords(shown)
    _announce_demo(classroom, active=False)


def _log_demo(action: str, classroom: Classroom, workspace: Workspace) -> None:
    """The class watches the teacher's own screen: the teacher is both who did it and whose screen."""
    audit.record(
        action,
        actor=workspace.owner,
        subject=workspace.owner,
        mode="demo",
        workspace=workspace,
        classroom=classroom,
    )


def demo_workspace(classroom: Classroom) -> Workspace | None:
    raw = redis_client().get(f"{DEMO_KEY}{classroom.pk}")
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
