"""The image catalog: filled from the engine's image labels, filtered per user."""

from __future__ import annotations

import re

from django.db.models import Q, QuerySet
from django.utils import timezone

from .engine_access import backend
from .models import Classroom, Image, ImageKind, ImageState, Role, User, Visibility

KINDS = {ImageKind.DISPLAY, ImageKind.APP}


def label_flag(value: str | None) -> bool:
    """A yes/no label such as lattice.kiosk: "1" or "true" is yes."""
    return (value or "").strip().lower() in ("1", "true", "yes")


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
            defaults={
                "reference": info["reference"],
                "kind": kind,
                "title": labels.get("lattice.title", slug),
                "description": labels.get("lattice.description", ""),
                "icon": labels.get("lattice.icon", ""),
                "mem_limit": labels.get("lattice.mem_limit", "1g"),
                "cpus": float(labels.get("lattice.cpus", 1.0)),
                "pids_limit": int(labels.get("lattice.pids_limit", 256)),
                "kiosk": label_flag(labels.get("lattice.kiosk")),
            },
        )
        image.reference = info["reference"]
        image.size = info.get("size", 0)
        image.built = info.get("created") or image.built or timezone.now()
        image.save(update_fields=["reference", "size", "built"])
        synced.append(image)
    return synced
