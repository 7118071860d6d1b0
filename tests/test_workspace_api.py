"""The workspace API's rules, without containers: validation, ownership, states, limits."""

import pytest

from tests.support.fakes import endpoint_state
from workspaces.display import tokens as display_tokens
from workspaces.lib.redis import redis_client
from workspaces.models import Image, Workspace
from workspaces.services import lifecycle

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(db):
    return {
        "desktop": Image.objects.create(
            slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
        ),
        "ide": Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE"),
        "office": Image.objects.create(
            slug="office", reference="lattice/office:latest", kind="app", title="Office", enabled=False
        ),
    }


@pytest.fixture
def as_owner(api_client, owner):
    api_client.force_authenticate(owner)
    return api_client


def launch(client, display="desktop", apps=("ide",)):
    return client.post("/api/workspaces/", {"display": display, "apps": list(apps)}, format="json")


def test_images_lists_what_the_user_may_launch(as_owner, catalog, stranger):
    Image.objects.create(
        slug="mine", reference="x", kind="app", title="Mine", owner=as_owner.handler._force_user
    )
    Image.objects.create(slug="theirs", reference="y", kind="app", title="Theirs", owner=stranger)
    slugs = {i["slug"] for i in as_owner.get("/api/images/").json()}
    assert slugs == {"desktop", "ide", "mine"}  # not disabled, not another user's
    entry = next(i for i in as_owner.get("/api/images/").json() if i["slug"] == "desktop")
    assert {"slug", "title", "kind", "description"} <= entry.keys()


def test_launch_answers_202_with_a_pending_workspace(as_owner, catalog):
    response = launch(as_owner)
    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "pending"
    assert body["display"] == "desktop" and body["apps"] == ["ide"]
    assert Workspace.objects.get(pk=body["id"]).vnc_password


@pytest.mark.parametrize(
    ("display", "apps", "words"),
    [
        ("nope", ["ide"], "Unknown image(s): nope"),
        ("desktop", ["ghost"], "Unknown image(s): ghost"),
        ("ide", [], "'ide' is an app image, not a display"),
        ("desktop", ["desktop"], "desktop is a display image"),
        ("desktop", ["ide", "ide"], "Each app can be chosen once"),
    ],
)
def test_bad_launches_are_400_with_a_clear_message(as_owner, catalog, display, apps, words):
    response = launch(as_owner, display, apps)
    assert response.status_code == 400
    assert words in response.json()["detail"]
    assert Workspace.objects.count() == 0


def test_a_disabled_image_is_403(as_owner, catalog):
    response = launch(as_owner, "desktop", ["office"])
    assert response.status_code == 403
    assert "office is disabled by an administrator" in response.json()["detail"]
    assert Workspace.objects.count() == 0


def test_missing_display_is_400(as_owner, catalog):
    response = as_owner.post("/api/workspaces/", {"apps": []}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "display: This field is required."


def test_another_users_saved_image_cannot_be_launched(as_owner, catalog, stranger):
    Image.objects.create(slug="stranger/secret:1", reference="z", kind="display", title="S", owner=stranger)
    response = launch(as_owner, "stranger/secret:1", [])
    # Not theirs: for them it does not exist, as for any other user's object.
    assert response.status_code == 404
    assert response.json()["detail"] == "No image stranger/secret:1."
    assert not Workspace.objects.filter(owner__username="owner").exists()


def test_a_kiosk_display_takes_exactly_one_app(as_owner, catalog):
    Image.objects.create(
        slug="kiosk", reference="lattice/kiosk:latest", kind="display", title="K", kiosk=True
    )
    Image.objects.create(slug="notes", reference="lattice/notes:latest", kind="app", title="Notes")
    for apps in ([], ["ide", "notes"]):
        response = launch(as_owner, "kiosk", apps)
        assert response.status_code == 400, response.json()
        assert "kiosk display: it shows exactly one app" in response.json()["detail"]
    assert launch(as_owner, "kiosk", ["ide"]).status_code == 202


def test_running_limit_answers_429(as_owner, catalog, settings):
    settings.LATTICE_MAX_RUNNING_WORKSPACES = 2
    assert launch(as_owner).status_code == 202
    assert launch(as_owner).status_code == 202
    response = launch(as_owner)
    assert response.status_code == 429
    assert "most allowed is 2" in response.json()["detail"]


def test_a_stranger_gets_404_everywhere(api_client, owner, stranger, catalog):
    ws = lifecycle.launch(owner, "desktop", ["ide"])
    api_client.force_authenticate(stranger)
    assert api_client.get(f"/api/workspaces/{ws.pk}/").status_code == 404
    assert api_client.post(f"/api/workspaces/{ws.pk}/stop/").status_code == 404
    assert api_client.post(f"/api/workspaces/{ws.pk}/start/").status_code == 404
    assert api_client.post(f"/api/workspaces/{ws.pk}/display-token/", {"mode": "view"}).status_code == 404
    assert api_client.delete(f"/api/workspaces/{ws.pk}/").status_code == 404
    assert api_client.get("/api/workspaces/").json() == []
    Workspace.objects.filter(pk=ws.pk).update(state="running")
    assert api_client.post(f"/api/workspaces/{ws.pk}/display-token/").status_code == 404


def test_viewer_page_is_404_for_a_stranger(client, owner, stranger, catalog):
    ws = lifecycle.launch(owner, "desktop", [])
    client.force_login(stranger)
    assert client.get(f"/workspaces/{ws.pk}/").status_code == 404
    client.force_login(owner)
    assert client.get(f"/workspaces/{ws.pk}/").status_code == 200


def test_wrong_state_answers_409(as_owner, catalog):
    ws_id = launch(as_owner).json()["id"]
    start = as_owner.post(f"/api/workspaces/{ws_id}/start/")
    assert start.status_code == 409
    assert "only a stopped or failed one can start" in start.json()["detail"]
    token = as_owner.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": "control"}, format="json")
    assert token.status_code == 409
    Workspace.objects.filter(pk=ws_id).update(state="stopped")
    assert as_owner.post(f"/api/workspaces/{ws_id}/stop/").status_code == 409


def test_double_stop_claims_once(owner, catalog):
    ws = lifecycle.launch(owner, "desktop", [])
    lifecycle.stop(ws)
    with pytest.raises(lifecycle.WrongState):
        lifecycle.stop(ws)
    assert Workspace.objects.get(pk=ws.pk).state == "stopping"


def test_bad_display_token_mode_is_400(as_owner, catalog):
    ws_id = launch(as_owner).json()["id"]
    Workspace.objects.filter(pk=ws_id).update(
        state="running",
        engine_state=endpoint_state(),
    )
    response = as_owner.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": "admin"}, format="json")
    assert response.status_code == 400
    assert "mode" in response.json()["detail"]


def test_display_token_is_bound_to_the_workspace_and_mode(as_owner, catalog):
    ws_id = launch(as_owner).json()["id"]
    Workspace.objects.filter(pk=ws_id).update(
        state="running",
        engine_state=endpoint_state(),
    )
    ws = Workspace.objects.get(pk=ws_id)
    view = as_owner.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": "view"}, format="json").json()
    control = as_owner.post(
        f"/api/workspaces/{ws_id}/display-token/", {"mode": "control"}, format="json"
    ).json()
    assert view["expires_in"] == 60
    assert view["password"] == ws.vnc_view_password != control["password"] == ws.vnc_password
    assert view["url"].startswith("ws://testserver:6080/?token=")
    token = view["url"].split("token=")[1]
    grant = display_tokens.consume(redis_client(), token)
    assert grant == display_tokens.Grant(
        workspace=ws_id,
        socket="/run/lattice/displays/x/vnc.sock",
        mode="view",
        user=ws.owner_id,
        container_id="c0ffee",
        server_pid=4242,
    )
    assert display_tokens.consume(redis_client(), token) is None  # single use


def test_stop_revokes_unused_tokens(as_owner, catalog):
    ws_id = launch(as_owner).json()["id"]
    Workspace.objects.filter(pk=ws_id).update(
        state="running",
        engine_state=endpoint_state(),
    )
    url = as_owner.post(f"/api/workspaces/{ws_id}/display-token/").json()["url"]
    assert as_owner.post(f"/api/workspaces/{ws_id}/stop/").status_code == 202
    assert display_tokens.consume(redis_client(), url.split("token=")[1]) is None


def test_delete_hides_the_workspace_at_once(as_owner, catalog):
    ws_id = launch(as_owner).json()["id"]
    assert as_owner.delete(f"/api/workspaces/{ws_id}/").status_code == 202
    assert as_owner.get(f"/api/workspaces/{ws_id}/").status_code == 404
    assert as_owner.delete(f"/api/workspaces/{ws_id}/").status_code == 404


def test_tokens_expire(owner):
    client = redis_client()
    token = display_tokens.issue(client, display_tokens.Grant(1, "/s", "view"), ttl=1)
    assert client.ttl(display_tokens.PREFIX + token) in (0, 1)
    client.pexpire(display_tokens.PREFIX + token, 1)
    import time

    time.sleep(0.01)
    assert display_tokens.consume(client, token) is None


def test_catalog_sync_takes_only_catalog_images_never_saved_ones(monkeypatch):
    from workspaces.services import catalog

    class Engine:
        def list_images(self):
            labels = {"lattice.kind": "app", "lattice.title": "T"}
            return [
                {"name": "ide", "reference": "lattice/ide:latest", "labels": labels, "size": 1},
                {"name": "x", "reference": "lattice/u/alice/x:1", "labels": labels, "size": 1},
                {"name": "y", "reference": "latticetest/y:latest", "labels": labels, "size": 1},
                {"name": "base", "reference": "lattice/base:latest", "labels": {}, "size": 1},
            ]

    monkeypatch.setattr(catalog, "backend", Engine)
    assert [image.slug for image in catalog.sync_from_engine()] == ["ide"]
    assert Image.objects.get().owner is None


def test_a_display_whose_server_is_not_known_gets_no_token_and_says_what_to_do(as_owner, catalog):
    ws_id = launch(as_owner).json()["id"]
    Workspace.objects.filter(pk=ws_id).update(
        state="running", engine_state={"endpoint": {"path": "/run/lattice/displays/x/vnc.sock"}}
    )
    response = as_owner.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": "control"}, format="json")
    assert response.status_code == 409
    assert "stop the workspace and start it again" in response.json()["detail"]
