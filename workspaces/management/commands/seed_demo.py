"""Create the demo accounts: admin, teacher, student1 … student30.

admin and teacher each get a password of their own, generated on the first
run and kept in var/demo-password-admin and var/demo-password-teacher: a
student who knows the class's password is not the teacher. The students share
one: LATTICE_DEMO_PASSWORD when set (it sets the students' password only),
otherwise one generated on the first run and kept in var/demo-password.
`make run` calls this at every start and prints the logins, so each start
resets the demo accounts' passwords (and roles): a password changed in the
portal lasts until the next `make run`. For trying Lattice out only; a
production install never runs it.
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
STAFF = (("admin", Role.ADMIN), ("teacher", Role.TEACHER))


def demo_accounts() -> list[tuple[str, str]]:
    accounts = list(STAFF)
    accounts += [(f"student{n}", Role.STUDENT) for n in range(1, STUDENTS + 1)]
    return accounts


def _kept_password(path: Path) -> str:
    """A password generated once and kept, readable by its owner only."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(9))
    return path.read_text().strip()


def demo_password() -> str:
    """The students' shared password."""
    explicit = os.environ.get("LATTICE_DEMO_PASSWORD")
    if explicit:
        return explicit
    return _kept_password(settings.LATTICE_DEMO_PASSWORD_FILE)


def staff_password(username: str) -> str:
    """admin's or teacher's own password, never the students' one."""
    path = Path(settings.LATTICE_DEMO_PASSWORD_FILE)
    password = _kept_password(path.with_name(f"{path.name}-{username}"))
    if password == demo_password():  # a students' password set to the same by hand
        write_private(path.with_name(f"{path.name}-{username}"), secrets.token_urlsafe(9))
        return staff_password(username)
    return password


def _hash_for(user: User | None, password: str) -> str:
    """The user's current hash when it still matches (no new salt, no save), else a new one."""
    return user.password if user and user.check_password(password) else make_password(password)


class Command(BaseCommand):
    help = (
        "Create the demo accounts (admin, teacher, student1 … student30), or reset their passwords "
        "and roles: `make run` runs this at every start, so demo passwords changed in the portal "
        "are reset then. admin and teacher get passwords of their own (var/demo-password-admin, "
        "var/demo-password-teacher); the students share LATTICE_DEMO_PASSWORD, else one kept in "
        "var/demo-password. Also writes the logins to var/demo-accounts.txt (mode 0600). "
        "Never run it in production."
    )

    def handle(self, *args, **options) -> None:
        passwords = {username: staff_password(username) for username, _ in STAFF}
        student_password = demo_password()
        existing = {u.username: u for u in User.objects.filter(username__in=[a for a, _ in demo_accounts()])}
        # The students share one hash: 30 separate PBKDF2 runs would take many seconds.
        hashes = {username: _hash_for(existing.get(username), passwords[username]) for username in passwords}
        student_hash = _hash_for(existing.get("student1"), student_password)
        changed = 0
        for username, role in demo_accounts():
            hashed = hashes.get(username, student_hash)
            user = existing.get(username) or User(username=username, role=role)
            if user.pk is None or user.password != hashed or user.role != role:
                user.password, user.role = hashed, role
                user.save()
                changed += 1
        lines = [f"{username:<24} password: {passwords[username]}" for username, _ in STAFF]
        lines.append(f"{f'student1 … student{STUDENTS}':<24} password: {student_password}")
        summary = "Demo accounts:\n" + "\n".join(f"  {line}" for line in lines)
        write_private(Path(settings.VAR_DIR) / "demo-accounts.txt", summary + "\n")
        self.stdout.write(summary + (f"\n  ({changed} updated)" if changed else ""))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, even if it existed with wider permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
