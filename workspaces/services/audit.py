"""The site's audit log: one append-only table (models.AuditEvent), one way to write it.

Actions are dotted names, grouped by what they are about: ``screen.session.start``
and ``screen.session.end`` (someone views or controls another user's screen),
``classroom.invite``, ``classroom.accept``, ``classroom.decline``,
``classroom.join``, ``classroom.place``, ``classroom.leave``, ``classroom.remove``,
``screen.demo.start`` and ``screen.demo.end`` (a teacher shows their screen to a class). A new feature adds
its own names here; it never adds a table.
"""

from __future__ import annotations

from typing import Any

from ..models import AuditEvent, Classroom, User, Workspace

SESSION_START = "screen.session.start"
SESSION_END = "screen.session.end"
INVITE = "classroom.invite"
ACCEPT = "classroom.accept"
DECLINE = "classroom.decline"
JOIN = "classroom.join"
PLACE = "classroom.place"
LEAVE = "classroom.leave"
REMOVE = "classroom.remove"
DEMO_START = "screen.demo.start"
DEMO_END = "screen.demo.end"


def record(
    action: str,
    *,
    actor: User | None = None,
    actor_name: str = "",
    subject: User | None = None,
    mode: str = "",
    workspace: Workspace | None = None,
    classroom: Classroom | int | None = None,
    **detail: Any,
) -> AuditEvent:
    """Append one event; ``detail`` is whatever else this action needs said."""
    if isinstance(classroom, int):
        classroom_id = classroom
    else:
        classroom_id = classroom.pk if classroom is not None else None
    return AuditEvent.objects.create(
        action=action,
        actor=actor,
        actor_name=actor_name,
        subject=subject,
        mode=mode,
        workspace=workspace,
        classroom_id=classroom_id,
        detail=detail,
    )
