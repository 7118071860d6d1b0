"""Create the demo accounts: admin, teacher, student1 … student30.

The password is LATTICE_DEMO_PASSWORD when set, otherwise one generated on the
first run and kept in var/demo-password, so later runs print the same one.
`make run` calls this at every start, so each start resets the demo accounts'
passwords (and roles): a password changed in the portal lasts until the next
`make run`. For trying Lattice out only; a production install never runs it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand

from workspaces.models import Role, User

STUDENTS = 30


def demo_accounts() -> list[tuple[str, str]]:
    accounts = [("admin", Role.ADMIN), ("teacher", Role.TEACHER)]
    accounts += [(f"student{n}", Role.STUDENT) for n in range(1, STUDENTS + 1)]
    return accounts


def demo_password() -> str:
    explicit = os.environ.get("LATTICE_DEMO_PASSWORD")
    if explicit:
        return explicit
    path = settings.LATTICE_DEMO_PASSWORD_FILE
    if not path.exists():
        write_private(path, secrets.token_urlsafe(9))
    return path.read_text().strip()


class Command(BaseCommand):
    help = (
        "Create the demo accounts (admin, teacher, student1 … student30), or reset their passwords "
        "and roles: `make run` runs this at every start, so demo passwords changed in the portal "
        "are reset then. The password is LATTICE_DEMO_PASSWORD, else one kept in var/demo-password. "
        "Also writes the logins to var/demo-accounts.txt (mode 0600). Never run it in production."
    )

    def handle(self, *args, **options) -> None:
        password = demo_password()
        existing = {u.username: u for u in User.objects.filter(username__in=[a for a, _ in demo_accounts()])}
        # Hash once and share it: 32 separate PBKDF2 runs would take many seconds.
        sample = existing.get("student1")
        hashed = sample.password if sample and sample.check_password(password) else make_password(password)
        changed = 0
        for username, role in demo_accounts():
            user = existing.get(username) or User(username=username, role=role)
            if user.pk is None or user.password != hashed or user.role != role:
                user.password, user.role = hashed, role
                user.save()
                changed += 1
        summary = f"Demo accounts: admin, teacher, student1 … student{STUDENTS} (password: {password})"
        write_private(Path(settings.VAR_DIR) / "demo-accounts.txt", summary + "\n")
        self.stdout.write(f"{summary}{' — updated ' + str(changed) if changed else ''}")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, even if it existed with wider permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
