from __future__ import annotations

import re
import secrets

from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from .leases import lease_end


class Role(models.TextChoices):
    STUDENT = "student", "Student"
    TEACHER = "teacher", "Teacher"
    ADMIN = "admin", "Admin"


class UserManager(DjangoUserManager):
    """Usernames are case-insensitive: "Alice" and "alice" are one account."""

    def get_by_natural_key(self, username: str) -> User:
        return self.get(username__iexact=username)

    def normalize_username(self, username: str) -> str:
        return super().normalize_username(username).lower()

    def create_superuser(self, username: str, email: str | None = None, password: str | None = None, **extra):
        # Django admin access follows the role (see User.save): a superuser is an admin.
        extra.setdefault("role", Role.ADMIN)
        if extra["role"] != Role.ADMIN:
            raise ValueError("A superuser has the admin role.")
        return super().create_superuser(username, email, password, **extra)


class User(AbstractUser):
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.STUDENT)
    # Saved-image quota; empty means the site default (LATTICE_SAVED_IMAGES_*).
    saved_images_max_count = models.PositiveIntegerField(null=True, blank=True)
    saved_images_max_bytes = models.BigIntegerField(null=True, blank=True)

    objects = UserManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("username"), name="username_case_insensitive_unique"),
        ]

    def save(self, *args, **kwargs) -> None:
        self.username = self.username.lower()
        # The admin role is the Django admin's superuser; nobody else gets in,
        # and an admin moved to another role loses it at once.
        self.is_superuser = self.is_staff = self.role == Role.ADMIN
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "role" in update_fields:
            kwargs["update_fields"] = {*update_fields, "is_superuser", "is_staff"}
        super().save(*args, **kwargs)

    @property
    def is_teacher(self) -> bool:
        return self.role == Role.TEACHER

    @property
    def is_admin_role(self) -> bool:
        return self.role == Role.ADMIN


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """A unit of background work a user waits for, with its progress.

    The live progress goes out as events; the row keeps the last word so a
    page opened later still shows where the work is.
    """

    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=300, blank=True)
    result = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    # Recovery (workspaces/leases.py): the task that does the job, called as
    # task(job_id=…, **task_kwargs), so reconcile can send it again when the
    # lease of a queued or running job lapses (its worker died).
    task = models.CharField(max_length=120, blank=True)
    task_kwargs = models.JSONField(default=dict, blank=True)
    leased_until = models.DateTimeField(default=lease_end, db_index=True)
    recoveries = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.state})"


class ImageState(models.TextChoices):
    SAVING = "saving", "Saving"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Visibility(models.TextChoices):
    EVERYONE = "everyone", "Everyone"
    GROUPS = "groups", "Some groups"
    CLASSROOMS = "classrooms", "Some classrooms"
    OWNER = "owner", "Only its owner"


class ImageKind(models.TextChoices):
    DISPLAY = "display", "Display"
    APP = "app", "App"


class Image(models.Model):
    """A catalog entry: an engine image users may launch, described by its labels."""

    # Catalog images: a plain slug ("ide"). Saved images: "<user>/<name>:<version>".
    slug = models.CharField(max_length=160, unique=True)
    reference = models.CharField(
        max_length=255, help_text="The engine's image reference, e.g. lattice/ide:latest"
    )
    kind = models.CharField(max_length=16, choices=ImageKind.choices)
    title = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    icon = models.CharField(max_length=16, blank=True)
    enabled = models.BooleanField(default=True)
    owner = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="saved_images",
        help_text="Set for images a user saved: only they see it.",
    )
    mem_limit = models.CharField(max_length=16, default="1g")
    cpus = models.FloatField(default=1.0)
    pids_limit = models.PositiveIntegerField(default=256)
    # How much a container of this image may write to its own filesystem
    # (outside /data) before the worker stops it: the storage driver has no
    # size option, so the limit is watched, not enforced by the engine.
    disk_limit = models.CharField(max_length=16, default="4g")
    # False: the image's app containers reach nothing at all, not even the
    # internet (private ranges, the host and link-local never, either way).
    internet = models.BooleanField(default=True)
    kiosk = models.BooleanField(default=False)
    size = models.BigIntegerField(default=0)
    built = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # Saved images (issue: save a customised container as a new image).
    state = models.CharField(max_length=16, choices=ImageState.choices, default=ImageState.READY)
    message = models.CharField(max_length=300, blank=True)
    name = models.CharField(max_length=64, blank=True)
    version = models.PositiveIntegerField(default=0)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    added_size = models.BigIntegerField(default=0)
    changes = models.JSONField(default=dict, blank=True)
    source_workspace = models.ForeignKey(
        "Workspace", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source_container = models.CharField(max_length=64, blank=True)
    # Who may launch it (catalog images; a saved image is its owner's alone).
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.EVERYONE)
    groups = models.ManyToManyField("auth.Group", blank=True, related_name="images")
    classrooms = models.ManyToManyField("Classroom", blank=True, related_name="images")
    origin = models.CharField(
        max_length=200, blank=True, help_text="How it came: built, uploaded, pulled, published…"
    )
    # A save under way: empty until a worker claims it, then its lease
    # (workspaces/leases.py); how often a dead worker's save was taken up again.
    leased_until = models.DateTimeField(null=True, blank=True)
    recoveries = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["kind", "title"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name", "version"], condition=~Q(name=""), name="saved_image_version_unique"
            ),
            # One save of a container at a time: the second gets a clear 409.
            models.UniqueConstraint(
                fields=["source_workspace", "source_container"],
                condition=Q(state="saving"),
                name="one_save_per_container",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def saved(self) -> bool:
        return self.owner_id is not None

    # What an image made from this one (a save, a publication) keeps of it.
    INHERITED = ("mem_limit", "disk_limit", "cpus", "pids_limit", "internet", "kiosk")

    def inherited(self) -> dict:
        """The limits and flags an image made from this one keeps."""
        return {field: getattr(self, field) for field in self.INHERITED}


class WorkspaceState(models.TextChoices):
    PENDING = "pending", "Pending"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"


ACTIVE_STATES = (WorkspaceState.PENDING, WorkspaceState.STARTING, WorkspaceState.RUNNING)


class WorkspaceQuerySet(models.QuerySet):
    def visible(self) -> WorkspaceQuerySet:
        return self.filter(deleting=False)

    def move(self, **fields) -> int:
        """update() that also stamps ``updated`` (auto_now only works through save()) and renews
        the lease: whoever moves a workspace (a claim, a progress report) is working on it."""
        return self.update(updated=timezone.now(), leased_until=lease_end(), **fields)


def new_engine_id() -> str:
    return secrets.token_hex(6)


class Workspace(models.Model):
    """One user's environment: a display plus apps, all sharing their data volume."""

    # The engine's name for it. Never reused (SQLite reuses row ids), so a
    # half-removed old workspace can never be mistaken for a new one.
    engine_id = models.CharField(max_length=32, unique=True, default=new_engine_id, editable=False)
    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="workspaces")
    display = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="+")
    apps = models.ManyToManyField(Image, blank=True, related_name="+")
    state = models.CharField(max_length=16, choices=WorkspaceState.choices, default=WorkspaceState.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=300, blank=True)
    # What the engine reported last: containers and the display's endpoint, so a
    # restart of the portal finds what it started (JupyterHub keeps it the same way).
    engine_state = models.JSONField(default=dict, blank=True)
    vnc_password = models.CharField(max_length=8, blank=True)
    vnc_view_password = models.CharField(max_length=8, blank=True)
    deleting = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    # While pending, starting, stopping or deleting: until when the task at
    # it (or, pending, its message in the queue) answers for it. Lapsed,
    # reconcile takes the step up again (workspaces/leases.py).
    leased_until = models.DateTimeField(default=lease_end, db_index=True)
    recoveries = models.PositiveSmallIntegerField(default=0)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"workspace {self.pk} of {self.owner_id} ({self.state})"


def new_join_code() -> str:
    # No 0/O or 1/I/L: students type it.
    alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


class Classroom(models.Model):
    name = models.CharField(max_length=80)
    join_code = models.CharField(max_length=16, unique=True, default=new_join_code)
    teachers = models.ManyToManyField(User, related_name="teaching")
    # Members: a student is one only by their own act (accepting an
    # invitation, joining with the code) or an admin's placement.
    students = models.ManyToManyField(User, related_name="classrooms", blank=True)
    # Invited by a teacher, not yet accepted: they get nothing of the class.
    invited = models.ManyToManyField(User, related_name="invitations", blank=True)
    # False (an exam): the class's broadcast workspaces get no internet.
    internet = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def folder(self) -> str:
        """The classroom's folder name under /data: safe for any classroom name."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-.") or "class"
        return f"{slug[:40]}-{self.pk}"


class BroadcastState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    ENDED = "ended", "Ended"


class Broadcast(models.Model):
    """One environment sent to a whole class: a workspace per student."""

    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="broadcasts")
    teacher = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    display = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="+")
    apps = models.ManyToManyField(Image, blank=True, related_name="+")
    files = models.CharField(max_length=255, blank=True, help_text="A folder of the teacher's /data")
    state = models.CharField(max_length=16, choices=BroadcastState.choices, default=BroadcastState.QUEUED)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"broadcast {self.pk} to {self.classroom_id}"


class SeatState(models.TextChoices):
    QUEUED = "queued", "Queued"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"


class Seat(models.Model):
    """One student's part of a broadcast."""

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="seats")
    student = models.ForeignKey(User, on_delete=models.CASCADE, related_name="seats")
    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=16, choices=SeatState.choices, default=SeatState.QUEUED)
    message = models.CharField(max_length=300, blank=True)
    files = models.JSONField(default=dict, blank=True)
    # Starts tried: by the broadcast, a teacher's retry, or recovery after a worker died.
    attempts = models.PositiveSmallIntegerField(default=0)
    # Queued or starting: until when its task (or its message in the queue)
    # answers for it; lapsed, reconcile sends the seat's start again, and
    # counts it here.
    leased_until = models.DateTimeField(default=lease_end, db_index=True)
    recoveries = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["student__username"]
        constraints = [models.UniqueConstraint(fields=["broadcast", "student"], name="one_seat_per_student")]

    def __str__(self) -> str:
        return f"{self.student_id} in broadcast {self.broadcast_id}"


class ReviewState(models.TextChoices):
    PENDING = "pending", "Waiting for review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class PublishRequest(models.Model):
    """A user asks for one of their saved images to join the catalog."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="publish_requests")
    requested_by = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    note = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=ReviewState.choices, default=ReviewState.PENDING)
    reason = models.TextField(blank=True, help_text="Why it was rejected; the user reads it")
    reviewer = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    published = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    decided = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["image"], condition=Q(state="pending"), name="one_pending_review"
            ),
        ]

    def __str__(self) -> str:
        return f"publish {self.image_id} ({self.state})"


class DataSnapshot(models.Model):
    """One backup of a user's whole data volume, kept in object storage."""

    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="snapshots")
    key = models.CharField(max_length=255, unique=True, help_text="The object's key in the store")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, help_text="Of the stored bytes: a restore checks it")
    # Of the files (names, owners, modes, times, contents) but the top
    # folder's own time, which any write into /data changes: equal when
    # nothing a user would call a change happened.
    fingerprint = models.CharField(max_length=64)
    reason = models.CharField(max_length=32, help_text="stopped, schedule or asked")
    created = models.DateTimeField(auto_now_add=True)
    # The last time the volume was found the same as this backup: it still is current.
    checked = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return self.key


class AuditQuerySet(models.QuerySet):
    """No bulk change: the log is append-only (rows are added, never updated or deleted)."""

    def update(self, **kwargs):
        raise AuditLogIsAppendOnly("Audit events are never changed.")

    def delete(self):
        raise AuditLogIsAppendOnly("Audit events are never deleted.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AuditLogIsAppendOnly("Audit events are never changed.")


class AuditLogIsAppendOnly(Exception):
    """Something tried to change or delete an audit event."""


_KEPT = {"on_delete": models.DO_NOTHING, "db_constraint": False}


class AuditEvent(models.Model):
    """The site's audit log: who did what to whom, when. Append-only.

    Generic by design: ``action`` is a dotted name ("screen.session.start",
    "classroom.accept", …) and ``detail`` holds what is particular to it, so
    any later feature logs here rather than in a table of its own. Names are
    copied beside the foreign keys so that a row still says who it was after
    a user, workspace or classroom is gone.
    """

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    # DO_NOTHING without a database constraint: deleting a user, workspace or
    # classroom never touches a row; the names beside the keys still say who.
    actor = models.ForeignKey(User, null=True, blank=True, related_name="+", **_KEPT)
    actor_name = models.CharField(max_length=150, blank=True)
    subject = models.ForeignKey(User, null=True, blank=True, related_name="+", **_KEPT)
    subject_name = models.CharField(max_length=150, blank=True)
    # How a screen was reached (view, control, grid, demo); empty when that means nothing.
    mode = models.CharField(max_length=16, blank=True)
    workspace = models.ForeignKey(Workspace, null=True, blank=True, related_name="+", **_KEPT)
    classroom = models.ForeignKey(Classroom, null=True, blank=True, related_name="+", **_KEPT)
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.subject_name}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None or not self._state.adding:
            raise AuditLogIsAppendOnly("Audit events are never changed.")
        self.actor_name = self.actor_name or (self.actor.username if self.actor else "")
        self.subject_name = self.subject_name or (self.subject.username if self.subject else "")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogIsAppendOnly("Audit events are never deleted.")
