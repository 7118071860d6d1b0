import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_token_auth_gives_me(api_client, owner):
    response = api_client.post("/api/auth/token/", {"username": "Owner", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get("/api/me/").json() == {"username": "owner", "role": "student"}


def test_bad_credentials_are_a_400_with_detail(api_client, owner):
    response = api_client.post("/api/auth/token/", {"username": "owner", "password": "no"}, format="json")
    assert response.status_code == 400
    assert "Unable to log in" in response.json()["detail"]


def test_token_endpoint_is_throttled_too(api_client, owner, settings):
    for _ in range(settings.LATTICE_LOGIN_FAILURES_PER_USERNAME):
        api_client.post("/api/auth/token/", {"username": "owner", "password": "no"}, format="json")
    response = api_client.post("/api/auth/token/", {"username": "owner", "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert "Too many failed" in response.json()["detail"]


def test_anonymous_api_call_is_refused_with_detail(api_client):
    response = api_client.get("/api/me/")
    assert response.status_code == 401
    assert response.json()["detail"]


def test_invalid_token_is_refused(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api_client.get("/api/me/").status_code == 401


def test_session_auth_requires_csrf(owner):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.get("/api/me/").json()["username"] == "owner"
    refused = client.post("/api/jobs/diagnostics/")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    client.get("/student/")  # sets the csrftoken cookie, as a page load does
    token = client.cookies["csrftoken"].value
    accepted = client.post("/api/jobs/diagnostics/", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 202


def test_unknown_api_path_is_json_404(api_client, owner):
    api_client.force_authenticate(owner)
    response = api_client.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_jobs_of_others_are_404(api_client, owner, stranger):
    from workspaces.models import Job

    job = Job.objects.create(owner=owner, kind="diagnostics")
    api_client.force_authenticate(stranger)
    assert api_client.get(f"/api/jobs/{job.pk}/").status_code == 404
    api_client.force_authenticate(owner)
    assert api_client.get(f"/api/jobs/{job.pk}/").json()["kind"] == "diagnostics"


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/auth/token/" in paths and "/api/me/" in paths
    assert client.get("/api/docs/").status_code == 200


def test_validation_errors_carry_a_sentence(api_client):
    response = api_client.post("/api/auth/token/", {"username": "owner"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "password: This field is required."
    assert "password" in body["errors"]


def test_a_wrong_method_is_json_405(api_client, owner):
    api_client.force_authenticate(owner)
    response = api_client.post("/api/me/")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": 'Method "POST" not allowed.'}


def test_a_failing_view_is_json_500_without_a_traceback(owner, settings):
    from rest_framework.test import APIClient

    settings.DEBUG = False
    settings.ROOT_URLCONF = "tests.support.urls_with_errors"
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(owner)
    response = client.get("/api/broken/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"detail"}
    assert "try again" in response.json()["detail"]
    assert b"RuntimeError" not in response.content and b"a bug" not in response.content
