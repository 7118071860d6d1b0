"""What admins do to the catalog: add (engine image, build, upload, pull),
decide who sees what, disable, delete, edit, and review users' saved images.

Engine tags are claimed with care: an entry's tag is written only after its
row exists (in the same transaction), never over a tag something else uses,
and removed again when the row could not be made.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Count, IntegerField, OuterRef, ProtectedError, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..engine.base import EngineError
from ..lib import refusals
from ..lib.engine_access import backend
from ..models import (
    ACTIVE_STATES,
    Broadcast,
    Classroom,
    Image,
    ImageKind,
    ImageState,
    Job,
    JobState,
    PublishRequest,
    ReviewState,
    User,
    Visibility,
    Workspace,
)
from . import jobs, saved_images
from .catalog import DOCKER_COMPONENT, fields_from_labels

logger = logging.getLogger(__name__)

IMAGES_DIR = settings.BASE_DIR / "images"
# Engine names that are not catalog slugs, besides the folders of images/.
RESERVED = {
    "base-rootfs": "scripts/build-images keeps base's root filesystem as lattice/base-rootfs",
    "u": "users' saved images live under <prefix>/u/",
}


def build_timeout() -> float:
    return settings.LATTICE_BUILD_TIMEOUT


def pull_timeout() -> float:
    return settings.LATTICE_PULL_TIMEOUT


class CatalogError(refusals.BadInput):
    """Bad input (HTTP 400)."""


class CatalogConflict(refusals.Conflict, CatalogError):
    """Not possible in the current state: in use, decided already (HTTP 409)."""


# --- names ----------------------------------------------------------------------


def check_slug(slug: str) -> str:
    if not isinstance(slug, str) or len(slug) > 64 or not DOCKER_COMPONENT.fullmatch(slug):
        raise CatalogError(
            "The slug must be 1 to 64 lowercase letters or digits, joined by single '.', '_' or '-'."
        )
    if Image.objects.filter(slug=slug).exists():
        raise CatalogError(f"The catalog already has '{slug}'; choose another slug.")
    if (IMAGES_DIR / slug).is_dir():
        raise CatalogError(
            f"'{slug}' is the name of images/{slug}, which scripts/build-images tags as "
            f"lattice/{slug}:latest; choose another slug."
        )
    if slug in RESERVED:
        raise CatalogError(f"'{slug}' is reserved ({RESERVED[slug]}); choose another slug.")
    return slug


def engine_reference(slug: str) -> str:
    """Where an entry built or published by an admin lives on the engine."""
    return f"{settings.LATTICE_ENGINE_PREFIX}/{slug}:latest"


def check_target(slug: str) -> str:
    """The engine reference a new entry may take: a free slug, a tag nobody has."""
    reference = engine_reference(check_slug(slug))
    _check_free(reference)
    return reference


def _check_free(reference: str, besides: Image | None = None) -> None:
    """No entry (but ``besides``) names ``reference`` and the engine has no such tag."""
    holders = Image.objects.filter(reference=reference)
    if besides is not None:
        holders = holders.exclude(pk=besides.pk)
    holder = holders.first()
    if holder is not None:
        raise CatalogError(f"The entry '{holder.slug}' uses {reference} already; choose another slug.")
    try:
        taken = backend().image_exists(reference)
    except EngineError as exc:
        raise CatalogError(str(exc)) from None
    if taken:
        raise CatalogError(
            f"The engine has an image {reference} already, which this would replace; choose another slug."
        )


def scratch_reference(target: str, job: Job) -> str:
    """The tag a build job builds under, before its entry claims ``target``."""
    return f"{target.rsplit(':', 1)[0]}:build-{job.pk}"


def is_scratch(reference: str) -> bool:
    """True for a build's scratch tag (a build in progress, or one a crash left behind)."""
    return re.search(r":build-\d+$", reference) is not None


def check_visibility(
    visibility: str, groups: Iterable = (), classrooms: Iterable = ()
) -> tuple[list[Group], list[Classroom]]:
    if visibility not in (Visibility.EVERYONE, Visibility.GROUPS, Visibility.CLASSROOMS):
        raise CatalogError("Visibility is one of: everyone, groups, classrooms.")
    group_ids = {int(g) for g in groups or ()}
    room_ids = {int(c) for c in classrooms or ()}
    found_groups = list(Group.objects.filter(pk__in=group_ids))
    found_rooms = list(Classroom.objects.filter(pk__in=room_ids))
    if len(found_groups) != len(group_ids) or len(found_rooms) != len(room_ids):
        raise CatalogError("A chosen group or classroom does not exist (any more); reload the page.")
    if visibility == Visibility.GROUPS and not found_groups:
        raise CatalogError("Choose at least one group, or show the image to everyone.")
    if visibility == Visibility.CLASSROOMS and not found_rooms:
        raise CatalogError("Choose at least one classroom, or show the image to everyone.")
    if visibility == Visibility.EVERYONE:
        return [], []
    return (found_groups, []) if visibility == Visibility.GROUPS else ([], found_rooms)


def set_visibility(image: Image, visibility: str, groups: Iterable = (), classrooms: Iterable = ()) -> None:
    found_groups, found_rooms = check_visibility(visibility, groups, classrooms)
    image.visibility = visibility
    image.save(update_fields=["visibility"])
    image.groups.set(found_groups)
    image.classrooms.set(found_rooms)


# --- what uses an entry -----------------------------------------------------------


@dataclass
class Usage:
    running: int  # workspaces pending, starting or running
    workspaces: int  # every workspace naming it, stopped or failed ones too
    broadcasts: int  # broadcasts that sent it as their display
    descendants: int  # images saved from it (it is their parent)

    def blocker(self, slug: str) -> str:
        """Why the entry cannot be deleted, or "" when it can."""
        reasons = []
        if self.workspaces:
            reasons.append(
                f"'{slug}' is used by {_count(self.workspaces, 'workspace')} ({self.running} running); "
                "their owners must delete them first."
            )
        if self.broadcasts:
            reasons.append(
                f"It was the display of {_count(self.broadcasts, 'broadcast')}, which keep it in "
                "their classroom's history."
            )
        if self.descendants:
            reasons.append(
                f"{_count(self.descendants, 'image')} {'was' if self.descendants == 1 else 'were'} "
                f"saved from '{slug}' and keep it as their parent."
            )
        if not reasons:
            return ""
        return " ".join(reasons) + " Disable it instead to stop new launches."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _counted(queryset: QuerySet) -> Coalesce:
    """How many distinct rows ``queryset`` (filtered on OuterRef("pk")) has, as a subquery."""
    counts = queryset.order_by().annotate(one=Value(1)).values("one").annotate(n=Count("pk", distinct=True))
    return Coalesce(Subquery(counts.values("n"), output_field=IntegerField()), 0)


def usages(queryset: QuerySet[Image]) -> QuerySet[Image]:
    """The entries with what refers to each counted in the same query; read with usage_of()."""
    uses = Workspace.objects.filter(Q(display=OuterRef("pk")) | Q(apps=OuterRef("pk")))
    return queryset.annotate(
        usage_running=_counted(uses.filter(deleting=False, state__in=ACTIVE_STATES)),
        usage_workspaces=_counted(uses),
        usage_broadcasts=_counted(Broadcast.objects.filter(display=OuterRef("pk"))),
        usage_descendants=_counted(Image.objects.filter(parent=OuterRef("pk"))),
    )


def usage_of(image: Image) -> Usage:
    """The usage of an entry that came from usages()."""
    return Usage(
        running=image.usage_running,
        workspaces=image.usage_workspaces,
        broadcasts=image.usage_broadcasts,
        descendants=image.usage_descendants,
    )


def usage(image: Image) -> Usage:
    """What refers to the entry now (one query)."""
    return usage_of(usages(Image.objects.filter(pk=image.pk)).get())


def buildable_folders() -> list[str]:
    """The images/ folders an admin may build from the portal (base is the others' root)."""
    return sorted(p.name for p in IMAGES_DIR.iterdir() if (p / "Dockerfile").exists() and p.name != "base")


def parent_folder(folder: str) -> str:
    """The images/ folder ``folder`` is built FROM: the one its PARENT file names, else base.

    The convention of scripts/build-images (its parent_of), described in images/README.md.
    """
    path = IMAGES_DIR / folder / "PARENT"
    parent = "".join(path.read_text().split()) if path.is_file() else "base"
    if parent == folder or not (IMAGES_DIR / parent / "Dockerfile").is_file():
        raise CatalogError(
            f"images/{folder}/PARENT names '{parent}', which is not another folder of images/."
        )
    return parent


def build_base(folder: str = "") -> str:
    """The BASE build argument for a folder of images/ (an upload is built on base)."""
    return f"lattice/{parent_folder(folder) if folder else 'base'}:latest"


# --- adding -----------------------------------------------------------------------


def _entry(reference: str, labels: dict[str, str], fields: dict, origin: str, size: int = 0) -> Image:
    """A new catalog entry with its visibility, all or nothing."""
    kind = fields.get("kind") or labels.get("lattice.kind")
    if kind not in ImageKind.values:
        raise CatalogError("Say whether it is a display or an app (the image has no lattice.kind label).")
    slug = check_slug(fields.get("slug") or "")
    try:
        described = fields_from_labels(labels, slug, fields)
    except ValueError as exc:
        raise CatalogError(str(exc)) from None
    try:
        with transaction.atomic():
            image = Image.objects.create(
                slug=slug,
                reference=reference,
                kind=kind,
                **described,
                origin=origin[:200],
                size=size,
                built=timezone.now(),
            )
            set_visibility(
                image,
                fields.get("visibility", Visibility.EVERYONE),
                fields.get("groups", ()),
                fields.get("classrooms", ()),
            )
    except IntegrityError:
        raise CatalogError(f"The catalog already has '{slug}'; choose another slug.") from None
    return image


def add_from_engine(reference: str, fields: dict) -> Image:
    """An image the engine already has becomes a catalog entry."""
    if saved_images.is_saved_reference(reference):
        raise CatalogError("That is a user's saved image: it joins the catalog through the review queue.")
    check_visibility(fields.get("visibility", "everyone"), fields.get("groups"), fields.get("classrooms"))
    try:
        labels = backend().image_labels(reference)
        size = backend().image_size(reference)
    except EngineError as exc:
        raise CatalogError(str(exc)) from None
    return _entry(reference, labels, fields, origin=f"engine image {reference}", size=size)


def _claim_tag(source: str, target: str, make_entry: Callable[[], Image]) -> Image:
    """Make the entry, then tag ``source`` as ``target``, in one transaction.

    The tag comes last, so a refusal leaves the engine as it was; a tag made
    for a transaction that then failed is removed. Right before tagging, the
    target is checked again: nothing may have taken it since the request.
    """
    tagged = False
    try:
        with transaction.atomic():
            image = make_entry()
            _check_free(target, besides=image)
            try:
                backend().tag(source, target)
            except EngineError as exc:
                raise CatalogError(str(exc)) from None
            tagged = True
    except BaseException:
        if tagged:
            _remove_quietly(target)
        raise
    return image


def _remove_quietly(reference: str) -> None:
    try:
        backend().remove_image(reference)
    except EngineError:
        logger.warning("could not remove %s", reference, exc_info=True)


def _still_running(job: Job) -> None:
    if not Job.objects.filter(pk=job.pk, state=JobState.RUNNING).exists():
        raise CatalogError("The job was given up meanwhile; nothing was added.")


def queue_build(
    admin: User, fields: dict, folder: str = "", upload: tuple[BinaryIO, str] | None = None
) -> Job:
    """Validate, then build in the background; the entry appears only if the build succeeds."""
    from ..engine.build_context import context_from_upload

    check_target(fields.get("slug") or "")
    check_visibility(fields.get("visibility", "everyone"), fields.get("groups"), fields.get("classrooms"))
    if folder:
        if folder not in buildable_folders():
            raise CatalogError(
                f"There is no images/{folder} to build; choose one of {', '.join(buildable_folders())}."
            )
        build_base(folder)  # a broken PARENT file is refused now, not after the job waited
    elif upload is None:
        raise CatalogError("Choose a folder of images/ or upload a build context (.tar, .tar.gz or .zip).")
    result = {"fields": fields, "folder": folder}
    if upload is not None:
        result["upload"] = upload[1][:200]
    # No task yet: reconcile must not send a build whose upload is still being written.
    job = Job.objects.create(owner=admin, kind="build", result=result)
    if upload is not None:
        path = jobs.input_path(job)
        try:
            with path.open("wb") as out:
                context_from_upload(upload[0], upload[1], out)
        except EngineError as exc:
            path.unlink(missing_ok=True)
            job.delete()
            raise CatalogError(str(exc)) from None
    job.task = "workspaces.tasks.catalog.build_image"
    job.save(update_fields=["task"])
    transaction.on_commit(lambda: jobs.send(job))
    return job


def build_entry(job: Job, log: Callable[[str], None]) -> Image:
    """The build job's work: build under a scratch tag, then claim the entry's own tag."""
    from ..engine.build_context import context_from_folder

    fields, folder = job.result["fields"], job.result.get("folder")
    # Again, before the long build: a name may have been taken since the job was queued.
    target = check_target(fields["slug"])
    scratch = scratch_reference(target, job)
    base = build_base(folder)
    if folder:
        context = context_from_folder(IMAGES_DIR / folder)
        origin = f"built from images/{folder}"
    else:
        path = jobs.input_path(job)
        if not path.exists():
            raise CatalogError(
                "The uploaded build context is gone (the job waited too long); upload it again."
            )
        context = path.open("rb")
        origin = f"built from the upload {job.result.get('upload', '')}"
    try:
        built = backend().build(
            context,
            scratch,
            log,
            buildargs={"BASE": base},
            memory=settings.LATTICE_BUILD_MEMORY,
            cpus=settings.LATTICE_BUILD_CPUS,
            timeout=build_timeout(),
        )

        def make_entry() -> Image:
            _still_running(job)
            return _entry(target, built["labels"], fields, origin, size=built["size"])

        return _claim_tag(scratch, target, make_entry)
    finally:
        if not isinstance(context, bytes):
            context.close()
        _remove_quietly(scratch)  # the entry's tag keeps the image; a failed build has none


def queue_pull(admin: User, reference: str, fields: dict) -> Job:
    from ..engine.names import full_reference

    if not settings.LATTICE_REGISTRY:
        raise CatalogError("No registry is configured (set LATTICE_REGISTRY).")
    reference = (reference or "").strip()
    if not reference or re.search(r"\s", reference):
        raise CatalogError("Give the image's name in the registry, e.g. 'course/python:3.12'.")
    if not reference.startswith(settings.LATTICE_REGISTRY + "/"):
        reference = f"{settings.LATTICE_REGISTRY}/{reference}"
    reference = full_reference(reference)
    check_slug(fields.get("slug") or "")
    holder = Image.objects.filter(reference=reference).first()
    if holder is not None:
        raise CatalogError(
            f"The entry '{holder.slug}' uses {reference} already; a pull could change it under its users."
        )
    check_visibility(fields.get("visibility", "everyone"), fields.get("groups"), fields.get("classrooms"))
    return jobs.queue_job(
        admin, "pull", "workspaces.tasks.catalog.pull_image", {"fields": fields, "reference": reference}
    )


def pull_entry(job: Job, progress: Callable[[int, str], None]) -> Image:
    """The pull job's work; a tag the pull brought is removed when no entry could be made."""
    fields, reference = job.result["fields"], job.result["reference"]
    check_slug(fields["slug"])
    try:
        existed = backend().image_exists(reference)
        pulled = backend().pull(reference, progress, timeout=pull_timeout())
    except EngineError as exc:
        raise CatalogError(str(exc)) from None
    try:
        with transaction.atomic():
            _still_running(job)
            return _entry(
                reference, pulled["labels"], fields, f"pulled from {reference}", size=pulled["size"]
            )
    except BaseException:
        if not existed and not Image.objects.filter(reference=reference).exists():
            _remove_quietly(reference)
        raise


# --- removing ---------------------------------------------------------------------


def delete(image: Image) -> str:
    """Delete an entry nothing uses; its engine image goes when no other entry names it.

    The row goes first, in a transaction, so a refusal never leaves an entry
    without its image. Returns a note when the engine kept the image.
    """
    reference, slug = image.reference, image.slug
    with transaction.atomic():
        blocker = usage(image).blocker(slug)
        if blocker:
            raise CatalogConflict(blocker)
        shared = Image.objects.filter(reference=reference).exclude(pk=image.pk).exists()
        try:
            image.delete()
        except ProtectedError:
            raise CatalogConflict(
                f"'{slug}' was just put to use (a workspace or broadcast started); try again later."
            ) from None
    if shared:
        return ""
    try:
        backend().remove_image(reference)
    except EngineError as exc:
        logger.warning("catalog entry %s deleted, engine image kept: %s", slug, exc)
        return f"Deleted '{slug}' from the catalog; the engine kept {reference}: {exc}"
    return ""


# --- review -----------------------------------------------------------------------


def submit(image: Image, user: User, note: str = "") -> PublishRequest:
    if image.owner_id != user.pk or image.state != ImageState.READY:
        raise CatalogError("Only a saved image of yours that is ready can be submitted.")
    if image.publish_requests.filter(state=ReviewState.PENDING).exists():
        raise CatalogConflict("This image is waiting for review already.")
    try:
        with transaction.atomic():
            return PublishRequest.objects.create(image=image, requested_by=user, note=note[:2000])
    except IntegrityError:
        raise CatalogConflict("This image is waiting for review already.") from None


def approve(request: PublishRequest, admin: User, fields: dict) -> Image:
    """The saved image becomes a catalog entry under the engine prefix, seen by whom the admin chose."""
    if request.state != ReviewState.PENDING:
        raise CatalogConflict("This request was decided already.")
    saved = request.image
    if saved.state != ImageState.READY:
        raise CatalogConflict("The saved image is not ready.")
    slug = fields.get("slug") or ""
    target = check_target(slug)
    visibility = fields.get("visibility", Visibility.EVERYONE)
    check_visibility(visibility, fields.get("groups"), fields.get("classrooms"))

    def make_entry() -> Image:
        claimed = PublishRequest.objects.filter(pk=request.pk, state=ReviewState.PENDING).update(
            state=ReviewState.APPROVED, reviewer=admin, decided=timezone.now()
        )
        if claimed != 1:
            raise CatalogConflict("This request was decided already.")
        try:
            image = Image.objects.create(
                slug=check_slug(slug),
                reference=target,
                kind=saved.kind,
                title=fields.get("title") or saved.title,
                description=fields.get("description") or saved.description,
                icon=saved.icon,
                **saved.inherited(),
                size=saved.size,
                added_size=saved.added_size,
                parent=saved.parent,
                changes=saved.changes,
                origin=f"published from {saved.slug}"[:200],
                built=timezone.now(),
            )
        except IntegrityError:
            raise CatalogError(f"The catalog already has '{slug}'; choose another slug.") from None
        set_visibility(image, visibility, fields.get("groups"), fields.get("classrooms"))
        PublishRequest.objects.filter(pk=request.pk).update(published=image)
        return image

    return _claim_tag(saved.reference, target, make_entry)


def reject(request: PublishRequest, admin: User, reason: str) -> None:
    reason = (reason or "").strip()
    if not reason:
        raise CatalogError("Say why, so the author can fix it.")
    decided = PublishRequest.objects.filter(pk=request.pk, state=ReviewState.PENDING).update(
        state=ReviewState.REJECTED, reviewer=admin, reason=reason[:2000], decided=timezone.now()
    )
    if decided != 1:
        raise CatalogConflict("This request was decided already.")
    request.refresh_from_db()


# --- the admin's page ---------------------------------------------------------------

LOG_TAIL = 400


def recent_jobs(user: User, limit: int = 5) -> list[Job]:
    """The admin's latest builds and pulls, each with the end of its log, for the page."""
    found = list(Job.objects.filter(owner=user, kind__in=["build", "pull"]).order_by("-created")[:limit])
    for job in found:
        lines = job.log.splitlines()
        job.log_tail, job.log_cut = "\n".join(lines[-LOG_TAIL:]), max(0, len(lines) - LOG_TAIL)
        result = job.result or {}
        job.slug = (result.get("fields") or {}).get("slug", "")
        job.source = (
            f"images/{result['folder']}"
            if result.get("folder")
            else result.get("upload") or result.get("reference") or ""
        )
    return found


def engine_images_not_in_catalog() -> list[dict]:
    """Images on the engine that are not in the catalog yet (nor saved images, nor build scratch),
    with their Lattice labels and sizes: what an admin may add."""
    known = set(Image.objects.values_list("reference", flat=True))
    return [
        {"reference": i["reference"], "labels": i["labels"], "size": i["size"]}
        for i in backend().list_images()
        if i["reference"] not in known
        and not saved_images.is_saved_reference(i["reference"])
        and not is_scratch(i["reference"])
    ]
