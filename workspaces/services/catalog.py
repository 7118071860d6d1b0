"""The image catalog: filled from the engine's image labels, filtered per user."""

from __future__ import annotations

import logging
import re

from django.db.models import Q, QuerySet
from django.utils import timezone

from ..engine.specs import limit_problems, size_bytes
from ..lib.engine_access import backend
from ..models import Classroom, Image, ImageKind, ImageState, Role, User, Visibility

logger = logging.getLogger(__name__)

KINDS = {ImageKind.DISPLAY, ImageKind.APP}
# Docker's rule for one path component of a repository name: catalog slugs and
# saved images' names (and user namespaces kept as they are) follow it.
DOCKER_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


# Below this a desktop cannot even start (its X and session files).
MIN_DISK_LIMIT = 10 * 1024**2


def check_disk_limit(value: str) -> str:
    """A disk limit an admin or a label may set: a size of at least MIN_DISK_LIMIT; ValueError otherwise."""
    try:
        ok = size_bytes(value) >= MIN_DISK_LIMIT
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"A disk limit is a size such as 512m or 4g, at least 10m (not {value!r}).")
    return value


def label_flag(value: str | None) -> bool:
    """A yes/no label such as lattice.kiosk: "1" or "true" is yes."""
    return (value or "").strip().lower() in ("1", "true", "yes")


def _flag(value: str | None, default: bool) -> bool:
    """A yes/no label such as lattice.internet, where an absent label means ``default``."""
    if value is None or not value.strip():
        return default
    return label_flag(value)


def fields_from_labels(labels: dict[str, str], slug: str, given: dict | None = None) -> dict:
    """An entry's title, description, icon, limits, internet and kiosk flags: what
    ``given`` says, else the image's lattice.* labels, else the defaults.

    Limits that are not numbers, or that Docker would read as "unlimited" (a 0),
    raise ValueError naming the label or field (engine.specs.limit_problems).
    """
    given = given or {}

    def pick(field: str, default: object) -> tuple[object, str]:
        """The value, and where it came from (for the message)."""
        if given.get(field) not in (None, ""):
            return given[field], field
        label = f"lattice.{field}"
        return (labels[label], f"the image's label {label}") if label in labels else (default, field)

    limits = {
        "mem_limit": pick("mem_limit", "1g"),
        "cpus": pick("cpus", 1.0),
        "pids_limit": pick("pids_limit", 256),
    }
    problems = limit_problems(*(value for value, _ in limits.values()))
    if problems:
        raise ValueError(" ".join(f"{limits[f][1]}: {problem}" for f, problem in problems.items()))
    mem_limit, cpus, pids_limit = (value for value, _ in limits.values())
    disk_limit, disk_source = pick("disk_limit", "4g")
    try:
        check_disk_limit(str(disk_limit).strip())
    except ValueError as exc:
        raise ValueError(f"{disk_source}: {exc}") from None
    return {
        "title": given.get("title") or labels.get("lattice.title") or slug,
        "description": given.get("description") or labels.get("lattice.description", ""),
        "icon": given.get("icon") or labels.get("lattice.icon", ""),
        "mem_limit": str(mem_limit).strip(),
        "disk_limit": str(disk_limit).strip(),
        "cpus": float(cpus),
        "pids_limit": int(str(pids_limit).strip()),
        "internet": _flag(labels.get("lattice.internet"), True)
        if given.get("internet") is None
        else bool(given["internet"]),
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


def sync_from_engine(refused: list[str] | None = None) -> list[Image]:
    """Create or refresh a catalog entry for every catalog image the engine has.

    Admin edits (enabled, limits) are kept; the labels only fill what is new.
    An image whose labels hold bad limits is left out, with why in ``refused``.
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
        image = Image.objects.filter(slug=slug).first()
        if image is None:
            try:
                fields = fields_from_labels(labels, slug)
            except ValueError as exc:
                # Refused, not added with limits Docker would read as "none".
                logger.warning("catalog: %s not added: %s", info["reference"], exc)
                if refused is not None:
                    refused.append(f"{info['reference']}: {exc}")
                continue
            image, _ = Image.objects.get_or_create(
                slug=slug, defaults={"reference": info["reference"], "kind": kind, **fields}
            )
        image.reference = info["reference"]
        image.size = info.get("size", 0)
        image.built = info.get("created") or image.built or timezone.now()
        image.save(update_fields=["reference", "size", "built"])
        synced.append(image)
    return synced
