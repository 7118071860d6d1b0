"""Server-rendered pages. Thin: the work lives in services and tasks."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from .api.classrooms import BroadcastSerializer
from .api.workspaces import WorkspaceSerializer
from .engine.specs import limit_problems
from .models import (
    AuditEvent,
    Classroom,
    Image,
    ImageKind,
    PublishRequest,
    ReviewState,
    Role,
    Workspace,
    WorkspaceState,
)
from .services import admin_catalog, classrooms, saved_images, teaching
from .services.accounts import DASHBOARDS, role_required
from .services.catalog import check_disk_limit, launchable

# How many of the newest audit events the admin dashboard lists (all: GET /api/admin/audit/).
AUDIT_SHOWN = 50


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect(DASHBOARDS[request.user.role])


def _my_workspaces(user) -> dict:
    """What the launcher, the workspace list and the saved images need."""
    images = list(launchable(user))
    workspaces = Workspace.objects.visible().filter(owner=user).select_related("display")
    return {
        "displays": [i for i in images if i.kind == ImageKind.DISPLAY],
        "apps": [i for i in images if i.kind == ImageKind.APP],
        "workspaces": WorkspaceSerializer(workspaces.prefetch_related("apps"), many=True).data,
        "saved": Image.objects.filter(owner=user).select_related("parent").order_by("-created"),
        "last_backup": user.snapshots.first(),
    }


@role_required(Role.STUDENT)
def student_dashboard(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "workspaces/student_dashboard.html",
        {
            **_my_workspaces(request.user),
            "classrooms": request.user.classrooms.prefetch_related("teachers"),
            "invitations": request.user.invitations.prefetch_related("teachers"),
        },
    )


@role_required(Role.TEACHER)
def teacher_dashboard(request: HttpRequest) -> HttpResponse:
    taught = classrooms.taught_by(request.user).prefetch_related("students", "invited", "teachers")
    return render(
        request, "workspaces/teacher_dashboard.html", {**_my_workspaces(request.user), "classrooms": taught}
    )


@role_required(Role.ADMIN)
def admin_dashboard(request: HttpRequest) -> HttpResponse:
    images = list(
        admin_catalog.usages(Image.objects.filter(owner=None).prefetch_related("groups", "classrooms"))
    )
    for image in images:
        image.usage = admin_catalog.usage_of(image)
        image.delete_blocked = image.usage.blocker(image.slug)
    return render(
        request,
        "workspaces/admin_dashboard.html",
        {
            "images": images,
            "folders": admin_catalog.buildable_folders(),
            "groups": Group.objects.order_by("name"),
            "classrooms": Classroom.objects.order_by("name"),
            "registry": settings.LATTICE_REGISTRY,
            "reviews": PublishRequest.objects.filter(state=ReviewState.PENDING).select_related(
                "image__parent", "requested_by"
            ),
            "jobs": admin_catalog.recent_jobs(request.user),
            "audit": AuditEvent.objects.select_related("classroom")[:AUDIT_SHOWN],
        },
    )


@role_required(Role.ADMIN)
def admin_image(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit one catalog entry: metadata, limits for the next launch, enabled, who sees it."""
    image = get_object_or_404(Image, pk=pk, owner=None)
    if request.method == "POST":
        try:
            with transaction.atomic():
                for name in ("title", "description", "icon", "mem_limit", "disk_limit"):
                    setattr(image, name, request.POST.get(name, getattr(image, name)).strip())
                image.cpus = float(request.POST.get("cpus", image.cpus))
                image.pids_limit = int(request.POST.get("pids_limit", image.pids_limit))
                image.kiosk = request.POST.get("kiosk") == "on"
                image.internet = request.POST.get("internet") == "on"
                image.enabled = request.POST.get("enabled") == "on"
                image.full_clean(exclude=["groups", "classrooms"])
                check_disk_limit(image.disk_limit)
                problems = limit_problems(image.mem_limit, image.cpus, image.pids_limit)
                if problems:
                    raise admin_catalog.CatalogError(" ".join(problems.values()))
                image.save()
                admin_catalog.set_visibility(
                    image,
                    request.POST.get("visibility", "everyone"),
                    request.POST.getlist("groups"),
                    request.POST.getlist("classrooms"),
                )
        except (ValueError, ValidationError) as exc:
            messages.error(
                request, getattr(exc, "message", None) or "; ".join(getattr(exc, "messages", [str(exc)]))
            )
        else:
            messages.success(request, f"Saved {image.slug}. New limits apply from the next launch.")
            return redirect("admin-dashboard")
    return render(
        request,
        "workspaces/admin_image.html",
        {
            "image": image,
            "usage": admin_catalog.usage(image),
            "groups": Group.objects.order_by("name"),
            "classrooms": Classroom.objects.order_by("name"),
        },
    )


@login_required
def viewer(request: HttpRequest, pk: int) -> HttpResponse:
    """The desktop, full window. Only the owner's own workspace: others get 404."""
    workspace = get_object_or_404(Workspace.objects.visible(), pk=pk, owner=request.user)
    mode = "view" if request.GET.get("mode") == "view" else "control"
    return render(
        request,
        "workspaces/viewer.html",
        {
            "workspace": workspace,
            "initial": WorkspaceSerializer(workspace).data,
            "mode": mode,
            "token_url": f"/api/workspaces/{workspace.pk}/display-token/",
            "state_url": f"/api/workspaces/{workspace.pk}/",
            "back_url": reverse("home"),
            "title": f"Workspace {workspace.pk}",
            "own": True,
        },
    )


@login_required
def saved_image(request: HttpRequest, pk: int) -> HttpResponse:
    """A saved image's page: what changed over its parent, rename, describe, delete."""
    image = get_object_or_404(Image.objects.select_related("parent"), pk=pk, owner=request.user)
    if request.method == "POST":
        if request.POST.get("action") == "delete":
            try:
                saved_images.delete(image)
            except saved_images.SaveConflict as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"Deleted {image.slug}.")
                return redirect("home")
        else:
            image.title = request.POST.get("title", image.title).strip()[:120] or image.title
            image.description = request.POST.get("description", image.description).strip()[:2000]
            image.save(update_fields=["title", "description"])
            messages.success(request, "Saved.")
        return redirect("saved-image", pk=image.pk)
    return render(
        request, "workspaces/saved_image.html", {"image": image, "in_use": saved_images.in_use(image)}
    )


@role_required(Role.TEACHER)
def classroom_page(request: HttpRequest, pk: int) -> HttpResponse:
    classroom = get_object_or_404(classrooms.taught_by(request.user), pk=pk)
    images = list(launchable(request.user))
    latest = classrooms.latest_broadcast(classroom)
    return render(
        request,
        "workspaces/classroom.html",
        {
            "classroom": classroom,
            "displays": [i for i in images if i.kind == ImageKind.DISPLAY],
            "apps": [i for i in images if i.kind == ImageKind.APP],
            "broadcast": BroadcastSerializer(latest).data if latest else None,
            "students": list(classroom.students.order_by("username").values_list("username", flat=True)),
            "invited": list(classroom.invited.order_by("username").values_list("username", flat=True)),
            "own_running": Workspace.objects.visible().filter(
                owner=request.user, state=WorkspaceState.RUNNING
            ),
            "demo": teaching.demo_workspace(classroom),
        },
    )


@role_required(Role.TEACHER)
def student_screen(request: HttpRequest, pk: int, username: str) -> HttpResponse:
    """A student's screen, large: view by default, ?mode=control to take control."""
    from secrets import token_urlsafe

    classroom = get_object_or_404(classrooms.taught_by(request.user), pk=pk)
    workspace = classrooms.student_workspace(classroom, username)
    mode = "control" if request.GET.get("mode") == "control" else "view"
    base = f"/api/classrooms/{classroom.pk}/students/{username}"
    # This page is one session, watching or in control: its reconnects and
    # renewals keep it (and the student's indicator), closing it ends only it
    # (another tab of the teacher's may still be there).
    session = f"?session={token_urlsafe(12)}"
    return render(
        request,
        "workspaces/viewer.html",
        {
            "workspace": workspace,
            "initial": WorkspaceSerializer(workspace).data,
            "mode": mode,
            "token_url": f"{base}/display-token/{session}",
            "release_url": f"{base}/release/{session}",
            "renew_url": f"{base}/renew/{session}&mode={mode}",
            "back_url": reverse("classroom", args=[classroom.pk]),
            "title": f"{username}'s screen",
            "switch_url": f"?mode={'view' if mode == 'control' else 'control'}",
        },
    )


@role_required(Role.STUDENT)
def demo_screen(request: HttpRequest, pk: int) -> HttpResponse:
    """The teacher's screen, shown to the class view-only while the demo lasts."""
    classroom = get_object_or_404(request.user.classrooms.all(), pk=pk)
    return render(
        request,
        "workspaces/viewer.html",
        {
            "workspace": None,
            "initial": {"id": 0, "state": "running", "progress": 100, "message": ""},
            "mode": "view",
            "token_url": f"/api/classrooms/{classroom.pk}/demo/token/",
            "back_url": reverse("home"),
            "title": f"{classroom.name}: your teacher's screen",
            "demo_classroom": classroom.pk,
        },
    )
