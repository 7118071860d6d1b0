"""What a teacher does to students' screens: view, take control, show their own.

Tokens come from the same single-use display-token mechanism as a student's
own; "view" tokens carry the VNC view-only password, which the VNC server
enforces, so neither a watching teacher nor a student in demo mode can send
input that reaches a desktop.
"""

from __future__ import annotations

import json

from . import lifecycle
from .events import publish, publish_group, user_group
from .models import Classroom, User, Workspace, WorkspaceState

DEMO_KEY = "lattice:demo:"
CONTROL_KEY = "lattice:control:"


def start_control(classroom: Classroom, teacher: User, workspace: Workspace) -> None:
    """Tell the student, visibly, that a teacher controls their screen."""
    lifecycle.redis_client().set(f"{CONTROL_KEY}{workspace.pk}", teacher.username, ex=3600)
    publish(
        workspace.owner_id,
        {
            "type": "control",
            "active": True,
            "by": teacher.username,
            "workspace": workspace.pk,
            "message": f"{teacher.username} is controlling your screen.",
        },
    )


def end_control(workspace: Workspace) -> None:
    lifecycle.redis_client().delete(f"{CONTROL_KEY}{workspace.pk}")
    publish(
        workspace.owner_id,
        {
            "type": "control",
            "active": False,
            "workspace": workspace.pk,
            "message": "Your teacher no longer controls your screen.",
        },
    )


def controlled_by(workspace: Workspace) -> str | None:
    name = lifecycle.redis_client().get(f"{CONTROL_KEY}{workspace.pk}")
    return name.decode() if name else None


def start_demo(classroom: Classroom, workspace: Workspace) -> None:
    if workspace.state != WorkspaceState.RUNNING:
        raise lifecycle.WrongState("Start the workspace you want to show first; it must be running.")
    lifecycle.redis_client().set(
        f"{DEMO_KEY}{classroom.pk}", json.dumps({"workspace": workspace.pk}), ex=8 * 3600
    )
    _announce_demo(classroom, active=True)


def end_demo(classroom: Classroom) -> None:
    lifecycle.redis_client().delete(f"{DEMO_KEY}{classroom.pk}")
    _announce_demo(classroom, active=False)


def demo_workspace(classroom: Classroom) -> Workspace | None:
    raw = lifecycle.redis_client().get(f"{DEMO_KEY}{classroom.pk}")
    if raw is None:
        return None
    return Workspace.objects.visible().filter(pk=json.loads(raw)["workspace"]).first()


def _announce_demo(classroom: Classroom, active: bool) -> None:
    event = {
        "type": "demo",
        "active": active,
        "classroom": classroom.pk,
        "name": classroom.name,
        "open": f"/classrooms/{classroom.pk}/demo/",
    }
    for student_id in classroom.students.values_list("pk", flat=True):
        publish_group(user_group(student_id), event)


def demo_token(classroom: Classroom) -> tuple[str, str]:
    """A view-only token to the demo for one student; WrongState when no demo runs."""
    workspace = demo_workspace(classroom)
    if workspace is None:
        raise lifecycle.WrongState("Your teacher is not showing a screen right now.")
    return lifecycle.issue_display_token(workspace, "view")
