"""The admin catalog's rules without a build: who may do what, who sees what."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.support import catalog_fakes
from tests.support.saved_images_fakes import make_saved_image
from workspaces.models import Broadcast, Classroom, Image, PublishRequest, Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def engine(settings):
    return catalog_fakes.use(settings)


@pytest.fixture
def catalog(db):
    return {
        "desktop": Image.objects.create(
            slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
        ),
        "ide": Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE"),
        "lab": Image.objects.create(slug="lab", reference="lattice/lab:latest", kind="app", title="Lab"),
    }


def visible(api_client, user) -> set[str]:
    api_client.force_authenticate(user)
    return {i["slug"] for i in api_client.get("/api/images/").json()}


def test_teachers_and_students_cannot_touch_the_catalog(api_client, owner, teacher, catalog, client):
    for user in (owner, teacher):
        api_client.force_authenticate(user)
        assert api_client.get("/api/admin/images/").status_code == 403
        assert (
            api_client.post("/api/admin/images/", {"reference": "x", "slug": "x"}, format="json").status_code
            == 403
        )
        assert (
            api_client.patch(
                f"/api/admin/images/{catalog['ide'].pk}/", {"enabled": False}, format="json"
            ).status_code
            == 403
        )
        assert api_client.delete(f"/api/admin/images/{catalog['ide'].pk}/").status_code == 403
        assert api_client.post("/api/admin/images/build/", {"slug": "x", "folder": "ide"}).status_code == 403
        assert (
            api_client.post(
                "/api/admin/images/pull/", {"slug": "x", "reference": "y"}, format="json"
            ).status_code
            == 403
        )
        assert api_client.get("/api/admin/reviews/").status_code == 403
        client.force_login(user)
        assert client.get("/manage/").status_code == 403
        assert client.get(f"/manage/images/{catalog['ide'].pk}/").status_code == 403
    assert Image.objects.get(slug="ide").enabled


def test_visibility_by_group_and_classroom(
    api_client, admin_user, owner, teammate, stranger, teacher, catalog
):
    physics = Group.objects.create(name="physics")
    owner.groups.add(physics)
    room = Classroom.objects.create(name="Lab class")
    room.students.add(teammate)
    room.teachers.add(teacher)
    api_client.force_authenticate(admin_user)
    assert (
        api_client.patch(
            f"/api/admin/images/{catalog['ide'].pk}/",
            {"visibility": "groups", "groups": [physics.pk]},
            format="json",
        ).status_code
        == 200
    )
    assert (
        api_client.patch(
            f"/api/admin/images/{catalog['lab'].pk}/",
            {"visibility": "classrooms", "classrooms": [room.pk]},
            format="json",
        ).status_code
        == 200
    )
    assert visible(api_client, owner) == {"desktop", "ide"}
    assert visible(api_client, teammate) == {"desktop", "lab"}
    assert visible(api_client, teacher) == {"desktop", "lab"}
    assert visible(api_client, stranger) == {"desktop"}
    assert visible(api_client, admin_user) == {"desktop", "ide", "lab"}
    # A crafted launch of what one may not use is refused, and creates nothing.
    api_client.force_authenticate(stranger)
    for apps in (["ide"], ["lab"]):
        response = api_client.post("/api/workspaces/", {"display": "desktop", "apps": apps}, format="json")
        assert response.status_code == 403
        assert "You may not launch" in response.json()["detail"]
    assert not Workspace.objects.exists()
    api_client.force_authenticate(owner)
    assert (
        api_client.post(
            "/api/workspaces/", {"display": "desktop", "apps": ["ide"]}, format="json"
        ).status_code
        == 202
    )


def test_groups_visibility_needs_a_group(api_client, admin_user, catalog):
    api_client.force_authenticate(admin_user)
    response = api_client.patch(
        f"/api/admin/images/{catalog['ide'].pk}/", {"visibility": "groups"}, format="json"
    )
    assert response.status_code == 400
    assert "at least one group" in response.json()["detail"]


def test_a_disabled_image_is_hidden_and_refused(api_client, admin_user, owner, catalog):
    # That running workspaces go on is shown on the real engine (test_admin_catalog_e2e).
    api_client.force_authenticate(admin_user)
    assert (
        api_client.patch(
            f"/api/admin/images/{catalog['desktop'].pk}/", {"enabled": False}, format="json"
        ).status_code
        == 200
    )
    assert "desktop" not in visible(api_client, owner)
    response = api_client.post("/api/workspaces/", {"display": "desktop"}, format="json")
    assert response.status_code == 403 and not Workspace.objects.exists()


def test_delete_is_refused_while_in_use(api_client, admin_user, owner, catalog):
    Workspace.objects.create(owner=owner, display=catalog["desktop"], state="running")
    api_client.force_authenticate(admin_user)
    response = api_client.delete(f"/api/admin/images/{catalog['desktop'].pk}/")
    assert response.status_code == 409
    assert "'desktop' is used by 1 workspace (1 running)" in response.json()["detail"]
    assert Image.objects.filter(slug="desktop").exists()


def test_admin_edits_limits(api_client, admin_user, catalog):
    api_client.force_authenticate(admin_user)
    response = api_client.patch(
        f"/api/admin/images/{catalog['ide'].pk}/",
        {"mem_limit": "768m", "cpus": 0.5, "pids_limit": 128, "title": "IDE!"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    ide = Image.objects.get(pk=catalog["ide"].pk)
    assert (ide.mem_limit, ide.cpus, ide.pids_limit, ide.title) == ("768m", 0.5, 128, "IDE!")
    bad = api_client.patch(f"/api/admin/images/{catalog['ide'].pk}/", {"mem_limit": "lots"}, format="json")
    assert bad.status_code == 400


def test_build_input_is_checked_before_anything_runs(api_client, admin_user, catalog, engine):
    api_client.force_authenticate(admin_user)
    assert (
        "already has 'ide'"
        in api_client.post("/api/admin/images/build/", {"slug": "ide", "folder": "office"}).json()["detail"]
    )
    assert (
        "no images/nope"
        in api_client.post("/api/admin/images/build/", {"slug": "x", "folder": "nope"}).json()["detail"]
    )
    assert (
        "upload a build context"
        in api_client.post("/api/admin/images/build/", {"slug": "x"}).json()["detail"]
    )


def test_an_upload_over_the_limit_is_refused_before_it_is_read(api_client, admin_user, engine, monkeypatch):
    import io

    from workspaces.api import admin_catalog as api

    monkeypatch.setattr(api, "MAX_UPLOAD_BYTES", 1024)
    upload = io.BytesIO(b"x" * 4096)
    upload.name = "big.tar"
    read = []
    monkeypatch.setattr("workspaces.engine.build_context.context_from_upload", lambda *a: read.append(a) or 0)
    api_client.force_authenticate(admin_user)
    response = api_client.post("/api/admin/images/build/", {"slug": "big", "context": upload})
    assert response.status_code == 400 and "over 1.0\xa0KB" in response.json()["detail"]
    assert not read


def test_pull_needs_a_registry(api_client, admin_user, settings):
    settings.LATTICE_REGISTRY = ""
    api_client.force_authenticate(admin_user)
    response = api_client.post("/api/admin/images/pull/", {"slug": "x", "reference": "a/b:1"}, format="json")
    assert response.status_code == 400
    assert "No registry is configured" in response.json()["detail"]


def test_review_submit_and_reject_with_a_reason(api_client, admin_user, owner, stranger, catalog, client):
    saved = make_saved_image(owner, "x", parent=catalog["ide"], title="x")
    api_client.force_authenticate(stranger)
    assert api_client.post(f"/api/saved-images/{saved.pk}/publish/").status_code == 404
    api_client.force_authenticate(owner)
    assert (
        api_client.post(
            f"/api/saved-images/{saved.pk}/publish/", {"note": "for week 3"}, format="json"
        ).status_code
        == 201
    )
    assert api_client.post(f"/api/saved-images/{saved.pk}/publish/").status_code == 409  # once at a time
    review = PublishRequest.objects.get()
    api_client.force_authenticate(admin_user)
    queue = api_client.get("/api/admin/reviews/").json()
    assert queue[0]["image"]["parent"] == "ide" and queue[0]["note"] == "for week 3"
    assert (
        api_client.post(f"/api/admin/reviews/{review.pk}/reject/", {"reason": ""}, format="json").status_code
        == 400
    )
    assert (
        api_client.post(
            f"/api/admin/reviews/{review.pk}/reject/", {"reason": "Remove the cache folder"}, format="json"
        ).status_code
        == 200
    )
    client.force_login(owner)
    assert "Remove the cache folder" in client.get(f"/images/{saved.pk}/").content.decode()


def test_the_catalog_list_counts_usage_in_one_query_however_many_entries(
    api_client, client, admin_user, owner, teacher, catalog, engine
):
    api_client.force_authenticate(admin_user)
    client.force_login(admin_user)

    def queries(url: str, fetch) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert fetch(url).status_code == 200
        return len(captured)

    before = queries("/api/admin/images/", api_client.get), queries("/manage/", client.get)
    room = Classroom.objects.create(name="Physics")
    for n in range(4):
        display = Image.objects.create(
            slug=f"d{n}", reference=f"lattice/d{n}:latest", kind="display", title="D"
        )
        ws = Workspace.objects.create(owner=owner, display=display, state="running")
        ws.apps.set([catalog["ide"], catalog["lab"]])
        Workspace.objects.create(owner=owner, display=display, state="stopped")
        Broadcast.objects.create(classroom=room, teacher=teacher, display=display, state="ended")
        make_saved_image(owner, f"mine{n}", kind="display", parent=display)
    after = queries("/api/admin/images/", api_client.get), queries("/manage/", client.get)
    assert after == before
    listed = {i["slug"]: i["usage"] for i in api_client.get("/api/admin/images/").json()}
    assert {k: v for k, v in listed["d0"].items() if k != "delete_blocked"} == {
        "running": 1,
        "workspaces": 2,
        "broadcasts": 1,
        "descendants": 1,
    }
    # Each workspace counts once, however many of its apps and display are the entry.
    assert (listed["ide"]["running"], listed["ide"]["workspaces"]) == (4, 4)
    assert listed["desktop"] == {
        "running": 0,
        "workspaces": 0,
        "broadcasts": 0,
        "descendants": 0,
        "delete_blocked": "",
    }
