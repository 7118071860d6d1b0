import pytest
from django.db import IntegrityError
from django.urls import reverse

from tests.conftest import PASSWORD
from workspaces.accounts import LOCKOUT_MESSAGE
from workspaces.models import User

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


def test_failed_logins_are_throttled_per_user(client, owner, settings):
    _fail(client, "owner", settings.AXES_FAILURE_LIMIT, ip="10.0.0.1")
    # Even the right password from another address is refused while locked.
    response = client.post("/login/", {"username": "OWNER", "password": PASSWORD}, REMOTE_ADDR="10.0.0.2")
    assert response.status_code == 429
    assert LOCKOUT_MESSAGE.encode() in response.content


def test_failed_logins_are_throttled_per_address(client, owner, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        _fail(client, f"guess{n}", 1, ip="10.0.0.9")
    response = client.post("/login/", {"username": "owner", "password": PASSWORD}, REMOTE_ADDR="10.0.0.9")
    assert response.status_code == 429
    # Another address is unaffected.
    ok = client.post("/login/", {"username": "owner", "password": PASSWORD}, REMOTE_ADDR="10.0.0.10")
    assert ok.status_code == 302


def test_lockout_does_not_reveal_whether_a_username_exists(client, owner, settings):
    _fail(client, "owner", settings.AXES_FAILURE_LIMIT, ip="10.0.1.1")
    _fail(client, "nobody", settings.AXES_FAILURE_LIMIT, ip="10.0.1.2")
    known = client.post("/login/", {"username": "owner", "password": "x"}, REMOTE_ADDR="10.0.1.3")
    unknown = client.post("/login/", {"username": "nobody", "password": "x"}, REMOTE_ADDR="10.0.1.4")
    assert known.status_code == unknown.status_code == 429
    assert known.content == unknown.content


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


def test_seed_demo_creates_accounts_with_the_given_password(monkeypatch):
    from django.core.management import call_command

    monkeypatch.setenv("LATTICE_DEMO_PASSWORD", "x")
    call_command("seed_demo")
    assert User.objects.filter(username__startswith="student").count() == 30
    assert User.objects.get(username="teacher").role == "teacher"
    assert User.objects.get(username="admin").is_staff
    assert User.objects.get(username="student30").check_password("x")
    monkeypatch.setenv("LATTICE_DEMO_PASSWORD", "y")
    call_command("seed_demo")
    assert User.objects.get(username="student7").check_password("y")
