"""Create the demo accounts: admin, teacher, student1 … student30.

The password is LATTICE_DEMO_PASSWORD when set, otherwise one generated on the
first run and kept in var/demo-password, so later runs print the same one.
"""

from __future__ import annotations

import os
import secrets

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
        path.write_text(secrets.token_urlsafe(9))
        path.chmod(0o600)
    return path.read_text().strip()


class Command(BaseCommand):
    help = "Create (or update the password of) the demo accounts."

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
        self.stdout.write(
            f"Demo accounts: admin, teacher, student1 … student{STUDENTS} "
            f"(password: {password}){' — updated ' + str(changed) if changed else ''}"
        )
