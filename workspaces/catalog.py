"""The image catalog: filled from the engine's image labels, filtered per user."""

from __future__ import annotations

import re

from django.db.models import Q, QuerySet
from django.utils import timezone

from .engine_access import backend
from .models import Classroom, Image, ImageKind, ImageState, Role, User, Visibility

KINDS = {ImageKind.DISPLAY, ImageKind.APP}
# Docker's rule for one path component of a repository name: catalog slugs and
# saved images' names (and user namespaces kept as they are) follow it.
DOCKER_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def label_flag(value: str | None) -> bool:
    """A yes/no label such as lattice.kiosk: "1" or "true" is yes."""
    return (value or "").strip().lower() in ("1", "true", "yes")


def fields_from_labels(labels: dict[str, str], slug: str, given: dict | None = None) -> dict:
    """An entry's title, description, icon, limits and kiosk flag: what ``given``
    says, else the image's lattice.* labels, else the defaults.

    A numeric label that is not a number raises ValueError naming it (only
    when ``given`` does not set that field).
    """
    given = given or {}

    def number(field: str, label: str, default: float, cast: type) -> float:
        if given.get(field):
            return given[field]
        value = labels.get(label, default)
        try:
            return cast(value)
        except (TypeError, ValueError):
            raise ValueError(f"The image's label {label} is not a number ({value!r}).") from None

    return {
        "title": given.get("title") or labels.get("lattice.title") or slug,
        "description": given.get("description") or labels.get("lattice.description", ""),
        "icon": given.get("icon") or labels.get("lattice.icon", ""),
        "mem_limit": given.get("mem_limit") or labels.get("lattice.mem_limit", "1g"),
        "disk_limit": given.get("disk_limit") or labels.get("lattice.disk_limit", "4g"),
        "cpus": number("cpus", "lattice.cpus", 1.0, float),
        "pids_limit": number("pids_limit", "lattice.pids_limit", 256, int),
        "kiosk": label_flag(labels.get("lattice.kiosk"))
        if given.get("kiosk") is None
        else bool(given["kiosk"]),
    }


def launchable(user: User) -> QuerySet[Image]:
    """What this user may launch: their own saved images, and the enabled catalog
    images shown to everyone, to one of their groups or to one of their classrooms."""
    ready = Image.objects.filter(enabled=True, state=ImageState.READY)
    if user.role == Role.ADMIN:
        return ready.filter(Q(owner=None) | Q(owner=user))
    catalog = Q(owner=None)
    their_classrooms = Classroom.objects.filter(Q(students=user) | Q(teachers=user))
    shown = (
        Q(visibility=Visibility.EVERYONE)
        | Q(visibility=Visibility.GROUPS, groups__in=user.groups.all())
        | Q(visibility=Visibility.CLASSROOMS, classrooms__in=their_classrooms)
    )
    ids = ready.filter((catalog & shown) | Q(owner=user)).values("pk")
    # Through ids: joins over groups and classrooms would repeat rows.
    return Image.objects.filter(pk__in=ids)


# Only the images `make images` builds: lattice/<name>:latest. Saved images
# (lattice/u/<user>/...) carry the same labels but are private to their owner,
# and anything else on the engine was not put there for the catalog.
CATALOG_REFERENCE = re.compile(r"lattice/[a-z0-9][a-z0-9._-]*:latest")


def sync_from_engine() -> list[Image]:
    """Create or refresh a catalog entry for every catalog image the engine has.

    Admin edits (enabled, limits) are kept; the labels only fill what is new.
    """
    synced = []
    for info in backend().list_images():
        if not CATALOG_REFERENCE.fullmatch(info["reference"]):
            continue
        labels = info.get("labels") or {}
        kind = labels.get("lattice.kind")
        slug = labels.get("lattice.slug") or info.get("name")
        if kind not in KINDS or not slug:
            continue
        image, _ = Image.objects.get_or_create(
            slug=slug,
            defaults={"reference": info["reference"], "kind": kind, **fields_from_labels(labels, slug)},
        )
        image.reference = info["reference"]
        image.size = info.get("size", 0)
        image.built = info.get("created") or image.built or timezone.now()
        image.save(update_fields=["reference", "size", "built"])
        synced.append(image)
    return synced
