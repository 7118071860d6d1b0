"""What admins do to the catalog: add (engine image, build, upload, pull),
decide who sees what, disable, delete, edit, and review users' saved images."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import jobs, saving
from .engine.base import EngineError
from .engine_access import backend
from .models import (
    ACTIVE_STATES,
    Classroom,
    Image,
    ImageKind,
    Job,
    PublishRequest,
    ReviewState,
    User,
    Visibility,
)

SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
IMAGES_DIR = settings.BASE_DIR / "images"


class CatalogError(ValueError):
    """Bad input (HTTP 400)."""


def check_slug(slug: str) -> str:
    if not isinstance(slug, str) or not SLUG.fullmatch(slug):
        raise CatalogError("The slug must be 1 to 64 lowercase letters, digits, '.', '_' or '-'.")
    if Image.objects.filter(slug=slug).exists():
        raise CatalogError(f"The catalog already has '{slug}'; choose another slug.")
    return slug


def usage(image: Image) -> int:
    from .models import Workspace

    live = Workspace.objects.filter(deleting=False, state__in=ACTIVE_STATES)
    return live.filter(Q(display=image) | Q(apps=image)).distinct().count()


def buildable_folders() -> list[str]:
    """The images/ folders an admin may build from the portal (base is the others' root)."""
    return sorted(p.name for p in IMAGES_DIR.iterdir() if (p / "Dockerfile").exists() and p.name != "base")


def _entry(reference: str, labels: dict[str, str], fields: dict, origin: str) -> Image:
    kind = fields.get("kind") or labels.get("lattice.kind")
    if kind not in ImageKind.values:
        raise CatalogError("Say whether it is a display or an app (the image has no lattice.kind label).")
    slug = check_slug(fields.get("slug") or "")
    image = Image.objects.create(
        slug=slug,
        reference=reference,
        kind=kind,
        title=fields.get("title") or labels.get("lattice.title") or slug,
        description=fields.get("description") or labels.get("lattice.description", ""),
        icon=fields.get("icon") or labels.get("lattice.icon", ""),
        mem_limit=fields.get("mem_limit") or labels.get("lattice.mem_limit", "1g"),
        cpus=float(fields.get("cpus") or labels.get("lattice.cpus", 1.0)),
        pids_limit=int(fields.get("pids_limit") or labels.get("lattice.pids_limit", 256)),
        kiosk=bool(fields.get("kiosk", False)),
        origin=origin,
        built=timezone.now(),
    )
    set_visibility(
        image,
        fields.get("visibility", Visibility.EVERYONE),
        fields.get("groups", ()),
        fields.get("classrooms", ()),
    )
    return image


def add_from_engine(reference: str, fields: dict) -> Image:
    """An image the engine already has becomes a catalog entry."""
    try:
        labels = backend().image_labels(reference)
        size = backend().image_size(reference)
    except EngineError as exc:
        raise CatalogError(str(exc)) from None
    image = _entry(reference, labels, fields, origin=f"engine image {reference}")
    Image.objects.filter(pk=image.pk).update(size=size)
    image.size = size
    return image


def queue_build(admin: User, fields: dict, folder: str = "", upload: tuple[bytes, str] | None = None) -> Job:
    """Validate, then build in the background; the entry appears only if the build succeeds."""
    from .tasks import build_image

    check_slug(fields.get("slug") or "")
    if folder:
        if folder not in buildable_folders():
            raise CatalogError(
                f"There is no images/{folder} to build; choose one of {', '.join(buildable_folders())}."
            )
    elif upload is None:
        raise CatalogError("Choose a folder of images/ or upload a build context (.tar, .tar.gz or .zip).")
    job = Job.objects.create(owner=admin, kind="build", result={"fields": fields, "folder": folder})
    if upload is not None:
        from .engine.docker_catalog import context_from_upload

        try:
            context = context_from_upload(*upload)
        except EngineError as exc:
            job.delete()
            raise CatalogError(str(exc)) from None
        path = settings.VAR_DIR / "build-contexts" / f"{job.pk}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(context)
        job.result = {**job.result, "context": str(path), "upload": upload[1]}
        job.save(update_fields=["result"])
    transaction.on_commit(lambda: build_image.delay(job.pk))
    return job


def queue_pull(admin: User, reference: str, fields: dict) -> Job:
    from .tasks import pull_image

    if not settings.LATTICE_REGISTRY:
        raise CatalogError("No registry is configured (set LATTICE_REGISTRY).")
    reference = (reference or "").strip()
    if not reference:
        raise CatalogError("Give the image's name in the registry, e.g. 'course/python:3.12'.")
    if not reference.startswith(settings.LATTICE_REGISTRY + "/"):
        reference = f"{settings.LATTICE_REGISTRY}/{reference}"
    check_slug(fields.get("slug") or "")
    return jobs.queue_job(admin, "pull", lambda job_id: pull_image.delay(job_id, reference, fields))


def set_visibility(image: Image, visibility: str, groups: Iterable = (), classrooms: Iterable = ()) -> None:
    if visibility not in Visibility.values or (visibility == Visibility.OWNER and image.owner_id is None):
        raise CatalogError("Visibility is one of: everyone, groups, classrooms.")
    groups = list(Group.objects.filter(pk__in=[int(g) for g in groups])) if groups else []
    rooms = list(Classroom.objects.filter(pk__in=[int(c) for c in classrooms])) if classrooms else []
    if visibility == Visibility.GROUPS and not groups:
        raise CatalogError("Choose at least one group, or show the image to everyone.")
    if visibility == Visibility.CLASSROOMS and not rooms:
        raise CatalogError("Choose at least one classroom, or show the image to everyone.")
    image.visibility = visibility
    image.save(update_fields=["visibility"])
    image.groups.set(groups)
    image.classrooms.set(rooms)


def delete(image: Image) -> None:
    """Refused while in use; the engine image goes only when no other entry names it."""
    if usage(image) or saving.in_use(image):
        raise CatalogError(
            f"'{image.slug}' is used by a workspace; stop and delete those first, or disable it."
        )
    shared = Image.objects.filter(reference=image.reference).exclude(pk=image.pk).exists()
    if not shared:
        try:
            backend().remove_image(image.reference)
        except EngineError as exc:
            raise CatalogError(str(exc)) from None
    image.delete()


# --- review ---------------------------------------------------------------------


def submit(image: Image, user: User, note: str = "") -> PublishRequest:
    if image.owner_id != user.pk or image.state != "ready":
        raise CatalogError("Only a saved image of yours that is ready can be submitted.")
    if image.publish_requests.filter(state=ReviewState.PENDING).exists():
        raise CatalogError("This image is waiting for review already.")
    return PublishRequest.objects.create(image=image, requested_by=user, note=note[:2000])


def approve(request: PublishRequest, admin: User, fields: dict) -> Image:
    if request.state != ReviewState.PENDING:
        raise CatalogError("This request was decided already.")
    saved = request.image
    slug = check_slug(fields.get("slug") or "")
    reference = f"lattice/{slug}:latest"
    try:
        backend().tag(saved.reference, reference)
    except EngineError as exc:
        raise CatalogError(str(exc)) from None
    with transaction.atomic():
        image = Image.objects.create(
            slug=slug,
            reference=reference,
            kind=saved.kind,
            title=fields.get("title") or saved.title,
            description=fields.get("description") or saved.description,
            icon=saved.icon,
            mem_limit=saved.mem_limit,
            cpus=saved.cpus,
            pids_limit=saved.pids_limit,
            kiosk=saved.kiosk,
            size=saved.size,
            added_size=saved.added_size,
            parent=saved.parent,
            changes=saved.changes,
            origin=f"published from {saved.slug}",
            built=timezone.now(),
        )
        set_visibility(
            image,
            fields.get("visibility", Visibility.EVERYONE),
            fields.get("groups", ()),
            fields.get("classrooms", ()),
        )
        request.state, request.reviewer, request.published = ReviewState.APPROVED, admin, image
        request.decided = timezone.now()
        request.save()
    return image


def reject(request: PublishRequest, admin: User, reason: str) -> None:
    if request.state != ReviewState.PENDING:
        raise CatalogError("This request was decided already.")
    reason = (reason or "").strip()
    if not reason:
        raise CatalogError("Say why, so the author can fix it.")
    request.state, request.reviewer, request.reason = ReviewState.REJECTED, admin, reason[:2000]
    request.decided = timezone.now()
    request.save()
