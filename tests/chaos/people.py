"""The people of a chaos test, each calling the real HTTP API with their own token."""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from workspaces.models import User

# Long enough for an answer from a web server under load, short enough that a
# request to a killed one does not hold the round up.
TIMEOUT = 15


@dataclass
class Person:
    user: User
    base_url: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        from rest_framework.authtoken.models import Token

        token, _ = Token.objects.get_or_create(user=self.user)
        self.session.headers["Authorization"] = f"Token {token.key}"

    @property
    def name(self) -> str:
        return self.user.username

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int | None, dict]:
        """The status and JSON body; no status when the web server did not answer (killed)."""
        try:
            response = self.session.request(method, f"{self.base_url}{path}", json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            return None, {"error": type(exc).__name__}
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"text": response.text[:200]}


def people(base_url: str, teacher: str, students: list[str], users: list[str]):
    """A teacher, the members of their class (made through the API) and users of their own."""
    make = User.objects.create_user
    password = "chaos horse battery"
    teacher_p = Person(make(username=teacher, password=password, role="teacher"), base_url)
    members = [Person(make(username=name, password=password), base_url) for name in students]
    loners = [Person(make(username=name, password=password), base_url) for name in users]
    status, room = teacher_p.call("POST", "/api/classrooms/", {"name": "Chaos", "students": students})
    assert status == 201, room
    for member in members:  # invited: each accepts, and only then is in the class
        status, body = member.call("POST", f"/api/classrooms/{room['id']}/accept/")
        assert status == 200, body
    return teacher_p, members, loners, room["id"]
