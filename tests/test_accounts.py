import re
from io import StringIO

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from tests.conftest import PASSWORD
from workspaces.models import User
from workspaces.services.accounts import LOCKOUT_MESSAGE

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("role", "dashboard"),
    [("student", "/student/"), ("teacher", "/teacher/"), ("admin", "/manage/")],
)
def test_each_role_lands_on_its_own_dashboard(client, make_user, role, dashboard):
    make_user("person", role=role)
    response = client.post("/login/", {"username": "person", "password": PASSWORD}, follow=True)
    assert response.redirect_chain[-1][0] == dashboard
    assert response.status_code == 200
    assert b"person" in response.content


@pytest.mark.parametrize(
    ("role", "forbidden"),
    [
        ("student", ["/teacher/", "/manage/"]),
        ("teacher", ["/student/", "/manage/"]),
        ("admin", ["/student/", "/teacher/"]),
    ],
)
def test_pages_of_other_roles_answer_403(client, make_user, role, forbidden):
    client.force_login(make_user("person", role=role))
    for url in forbidden:
        assert client.get(url).status_code == 403, url


def test_anonymous_is_sent_to_login(client):
    for url in ["/", "/student/", "/teacher/", "/manage/"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")


def test_only_admins_get_the_django_admin(client, make_user):
    client.force_login(make_user("teach", role="teacher"))
    assert client.get("/django-admin/").status_code == 302  # to the admin's own login
    client.force_login(make_user("boss", role="admin"))
    assert client.get("/django-admin/").status_code == 200


def test_usernames_are_case_insensitive(client, make_user):
    make_user("Alice")
    assert User.objects.get().username == "alice"
    response = client.post("/login/", {"username": "ALICE", "password": PASSWORD})
    assert response.status_code == 302
    with pytest.raises(IntegrityError):
        User.objects.create(username="alicE".upper())


def test_wrong_password_shows_an_error_without_saying_which_part(client, owner):
    response = client.post("/login/", {"username": "owner", "password": "nope"})
    assert response.status_code == 200
    assert b"do not match" in response.content


def _fail(client, username: str, times: int, ip: str = "10.0.0.1"):
    for _ in range(times):
        client.post("/login/", {"username": username, "password": "wrong"}, REMOTE_ADDR=ip)


def _login(client, username: str, ip: str, password: str = PASSWORD):
    response = client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)
    client.logout()
    return response


def test_failed_logins_are_throttled_per_user(client, owner, settings):
    _fail(client, "owner", settings.LATTICE_LOGIN_FAILURES_PER_USERNAME, ip="10.0.0.1")
    # Even the right password from another address is refused while locked.
    response = client.post("/login/", {"username": "OWNER", "password": PASSWORD}, REMOTE_ADDR="10.0.0.2")
    assert response.status_code == 429
    assert LOCKOUT_MESSAGE.encode() in response.content


def test_one_failure_short_of_the_limit_still_signs_in(client, owner, settings):
    _fail(client, "owner", settings.LATTICE_LOGIN_FAILURES_PER_USERNAME - 1, ip="10.0.0.1")
    assert _login(client, "owner", ip="10.0.0.1").status_code == 302


def test_failed_logins_are_throttled_per_address(client, owner, settings):
    settings.LATTICE_LOGIN_FAILURES_PER_ADDRESS = 8
    for n in range(8):
        _fail(client, f"guess{n}", 1, ip="10.0.0.9")
    response = client.post("/login/", {"username": "owner", "password": PASSWORD}, REMOTE_ADDR="10.0.0.9")
    assert response.status_code == 429
    # Another address is unaffected.
    ok = client.post("/login/", {"username": "owner", "password": PASSWORD}, REMOTE_ADDR="10.0.0.10")
    assert ok.status_code == 302


def test_a_school_behind_one_address_is_not_locked_out_by_a_few_typos(client, owner, settings):
    # A class mistyping at once, from one NAT address, more often than one
    # username may: the address's own limit is the higher one.
    per_username = settings.LATTICE_LOGIN_FAILURES_PER_USERNAME
    assert settings.LATTICE_LOGIN_FAILURES_PER_ADDRESS >= 30 > per_username
    for n in range(3 * per_username):
        _fail(client, f"student{n}", 1, ip="192.0.2.1")
    assert _login(client, "owner", ip="192.0.2.1").status_code == 302


def test_signing_in_to_ones_own_account_does_not_reset_guesses_at_others(client, make_user, settings):
    """The audit's bypass: limit-1 wrong guesses at the victim, one good sign-in as oneself, repeat."""
    make_user("victim")
    make_user("mallory", password="mallory's own password")
    settings.LATTICE_LOGIN_FAILURES_PER_ADDRESS = 1000  # only the per-username limit is under test
    per_username = settings.LATTICE_LOGIN_FAILURES_PER_USERNAME
    for _ in range(3):
        _fail(client, "victim", per_username - 1, ip="203.0.113.7")
        signed_in = _login(client, "mallory", ip="203.0.113.7", password="mallory's own password")
        assert signed_in.status_code == 302
    # 3 * (limit - 1) guesses at the victim: locked, even for the right password from elsewhere.
    refused = _login(client, "victim", ip="198.51.100.1")
    assert refused.status_code == 429
    assert LOCKOUT_MESSAGE.encode() in refused.content


def test_signing_in_does_not_reset_the_address_count(client, make_user, settings):
    """Spraying many usernames from one address, with a good sign-in in between, still reaches the address limit."""
    make_user("mallory", password="mallory's own password")
    make_user("victim")
    settings.LATTICE_LOGIN_FAILURES_PER_ADDRESS = 8
    for n in range(6):
        _fail(client, f"someone{n}", 1, ip="203.0.113.8")
    assert _login(client, "mallory", ip="203.0.113.8", password="mallory's own password").status_code == 302
    _fail(client, "someone6", 1, ip="203.0.113.8")
    _fail(client, "someone7", 1, ip="203.0.113.8")
    assert _login(client, "victim", ip="203.0.113.8").status_code == 429
    assert _login(client, "victim", ip="198.51.100.2").status_code == 302


def test_a_good_sign_in_forgives_only_that_usernames_own_typos(client, owner, settings):
    per_username = settings.LATTICE_LOGIN_FAILURES_PER_USERNAME
    _fail(client, "owner", per_username - 1, ip="10.0.2.1")
    assert _login(client, "owner", ip="10.0.2.1").status_code == 302
    # Forgiven: a whole new allowance of typos before the lockout.
    _fail(client, "owner", per_username - 1, ip="10.0.2.1")
    assert _login(client, "owner", ip="10.0.2.1").status_code == 302


def _page(response, username: str) -> bytes:
    """The page without what differs on every render (the CSRF token) or echoes the input."""
    page = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]*"', b"", response.content)
    return page.replace(username.encode(), b"NAME")


def test_lockout_does_not_reveal_whether_a_username_exists(client, owner, settings):
    # Step by step, a known and an unknown username get the same answers.
    known_answers, unknown_answers = [], []
    for _ in range(settings.LATTICE_LOGIN_FAILURES_PER_USERNAME + 1):
        known = client.post("/login/", {"username": "owner", "password": "x"}, REMOTE_ADDR="10.0.1.1")
        unknown = client.post("/login/", {"username": "nobody", "password": "x"}, REMOTE_ADDR="10.0.1.2")
        known_answers.append((known.status_code, _page(known, "owner")))
        unknown_answers.append((unknown.status_code, _page(unknown, "nobody")))
    assert known_answers == unknown_answers
    assert known_answers[-1][0] == 429
    # And once locked, the right password gets the same answer as a wrong one.
    right = client.post("/login/", {"username": "owner", "password": PASSWORD}, REMOTE_ADDR="10.0.1.3")
    wrong = client.post("/login/", {"username": "nobody", "password": PASSWORD}, REMOTE_ADDR="10.0.1.4")
    assert right.status_code == wrong.status_code == 429
    assert right.content == wrong.content


def test_password_change(client, owner):
    client.force_login(owner)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a much newer secret",
            "new_password2": "a much newer secret",
        },
    )
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password("a much newer secret")


def test_logout_ends_the_session(client, owner):
    client.force_login(owner)
    client.post("/logout/")
    assert client.get("/student/").status_code == 302


def test_seed_demo_creates_accounts_with_the_given_password(monkeypatch, settings, tmp_path):
    from django.core.management import call_command

    settings.VAR_DIR = tmp_path
    settings.LATTICE_DEMO_PASSWORD_FILE = tmp_path / "demo-password"
    monkeypatch.setenv("LATTICE_DEMO_PASSWORD", "x")
    call_command("seed_demo")
    assert User.objects.filter(username__startswith="student").count() == 30
    assert User.objects.get(username="teacher").role == "teacher"
    assert User.objects.get(username="admin").is_staff
    assert User.objects.get(username="student30").check_password("x")
    monkeypatch.setenv("LATTICE_DEMO_PASSWORD", "y")
    call_command("seed_demo")
    assert User.objects.get(username="student7").check_password("y")
    # LATTICE_DEMO_PASSWORD is the students' password only.
    assert not User.objects.get(username="admin").check_password("y")
    assert not User.objects.get(username="teacher").check_password("y")


def test_admin_and_teacher_get_passwords_of_their_own(monkeypatch, settings, tmp_path):
    import stat

    from django.core.management import call_command

    settings.VAR_DIR = tmp_path
    settings.LATTICE_DEMO_PASSWORD_FILE = tmp_path / "demo-password"
    monkeypatch.delenv("LATTICE_DEMO_PASSWORD", raising=False)
    out = StringIO()
    call_command("seed_demo", stdout=out)
    students = (tmp_path / "demo-password").read_text().strip()
    admin = (tmp_path / "demo-password-admin").read_text().strip()
    teacher = (tmp_path / "demo-password-teacher").read_text().strip()
    assert len({students, admin, teacher}) == 3
    for name in ("demo-password-admin", "demo-password-teacher"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert User.objects.get(username="admin").check_password(admin)
    assert User.objects.get(username="teacher").check_password(teacher)
    for username in ("admin", "teacher"):
        assert not User.objects.get(username=username).check_password(students)
    assert User.objects.get(username="student3").check_password(students)
    assert not User.objects.get(username="student3").check_password(teacher)
    # Printed at start (scripts/run shows demo-accounts.txt) with their usernames.
    for text in (out.getvalue(), (tmp_path / "demo-accounts.txt").read_text()):
        assert re.search(rf"admin +password: {re.escape(admin)}", text)
        assert re.search(rf"teacher +password: {re.escape(teacher)}", text)
        assert re.search(rf"student1 … student30 +password: {re.escape(students)}", text)
    # The next start keeps them.
    call_command("seed_demo", stdout=StringIO())
    assert User.objects.get(username="admin").check_password(admin)


def test_the_database_itself_refuses_a_second_case_of_a_username(make_user):
    # bulk_create and update() skip User.save(), which lowercases: only the
    # Lower("username") constraint stands between them and a duplicate.
    make_user("alice")
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.bulk_create([User(username="ALICE")])
    bob = make_user("bob")
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.filter(pk=bob.pk).update(username="Alice")
    assert sorted(User.objects.values_list("username", flat=True)) == ["alice", "bob"]


def test_demoting_an_admin_takes_away_the_django_admin(client, make_user):
    boss = make_user("boss", role="admin")
    assert boss.is_superuser and boss.is_staff
    boss.role = "teacher"
    boss.save()
    boss.refresh_from_db()
    assert not boss.is_superuser and not boss.is_staff
    client.force_login(boss)
    assert client.get("/django-admin/").status_code == 302  # to the admin's own login


def test_saving_only_the_role_still_updates_admin_access(make_user):
    boss = make_user("boss", role="admin")
    boss.role = "student"
    boss.save(update_fields=["role"])
    boss.refresh_from_db()
    assert (boss.is_superuser, boss.is_staff) == (False, False)
    boss.role = "admin"
    boss.save(update_fields=["role"])
    boss.refresh_from_db()
    assert (boss.is_superuser, boss.is_staff) == (True, True)


def test_nobody_but_an_admin_keeps_a_superuser_flag(make_user):
    user = make_user("sneaky", role="student")
    user.is_superuser = user.is_staff = True
    user.save()
    user.refresh_from_db()
    assert not user.is_superuser and not user.is_staff


def test_createsuperuser_makes_an_admin(client):
    from django.core.management import call_command

    call_command("createsuperuser", username="Root", email="root@example.org", interactive=False)
    root = User.objects.get(username="root")
    assert root.role == "admin" and root.is_superuser and root.is_staff
    made = User.objects.create_superuser("chief", "chief@example.org", PASSWORD)
    assert made.role == "admin"
    client.force_login(made)
    assert client.get("/django-admin/").status_code == 200
    assert client.get("/manage/").status_code == 200
    with pytest.raises(ValueError):
        User.objects.create_superuser("odd", "odd@example.org", PASSWORD, role="student")


def test_seed_demo_writes_the_logins_for_its_owner_only(monkeypatch, settings, tmp_path):
    import stat

    from django.core.management import call_command

    settings.VAR_DIR = tmp_path
    settings.LATTICE_DEMO_PASSWORD_FILE = tmp_path / "demo-password"
    (tmp_path / "demo-accounts.txt").write_text("old")
    (tmp_path / "demo-accounts.txt").chmod(0o644)  # as an older `make run` left it
    monkeypatch.delenv("LATTICE_DEMO_PASSWORD", raising=False)
    call_command("seed_demo")
    password = (tmp_path / "demo-password").read_text().strip()
    accounts = tmp_path / "demo-accounts.txt"
    assert stat.S_IMODE(accounts.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "demo-password").stat().st_mode) == 0o600
    assert re.search(rf"student1 … student30 +password: {re.escape(password)}", accounts.read_text())
    assert User.objects.get(username="student1").check_password(password)


def test_seed_demo_says_it_resets_passwords():
    from workspaces.management.commands.seed_demo import Command

    assert "reset" in Command.help and "make run" in Command.help
