"""Save as image: the API's rules, without containers."""

import re

import pytest

from tests.support.saved_images_fakes import make_saved_image, use_fake_engine
from workspaces.engine.base import EngineError
from workspaces.models import Broadcast, Classroom, Image, User, Workspace
from workspaces.services import saved_images

pytestmark = pytest.mark.django_db


@pytest.fixture
def workspace(owner):
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )
    ide = Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE")
    # In the catalog, not in this workspace: its container name is still taken.
    Image.objects.create(slug="web-browser", reference="lattice/web-browser:latest", kind="app", title="Web")
    ws = Workspace.objects.create(owner=owner, display=desktop, state="running")
    ws.apps.set([ide])
    return ws


@pytest.fixture
def engine(settings):
    return use_fake_engine(settings)


@pytest.fixture
def as_owner(api_client, owner):
    api_client.force_authenticate(owner)
    return api_client


def commit(client, ws, container="ide", name="my-ide", description=""):
    return client.post(
        f"/api/workspaces/{ws.pk}/containers/{container}/commit/",
        {"name": name, "description": description},
        format="json",
    )


def test_save_answers_202_with_a_saving_entry_in_the_users_namespace(as_owner, workspace, settings):
    response = commit(as_owner, workspace, description="with plugins")
    assert response.status_code == 202
    body = response.json()
    assert body["slug"] == "owner/my-ide:1" and body["state"] == "saving"
    image = Image.objects.get(pk=body["id"])
    # Under the engine prefix: a test run never writes into the real lattice/u/ namespace.
    assert image.reference == f"{settings.LATTICE_ENGINE_PREFIX}/u/owner/my-ide:1"
    assert saved_images.is_saved_reference(image.reference)
    assert image.origin == "saved from IDE (ide)"
    assert image.parent.slug == "ide" and image.kind == "app" and image.owner.username == "owner"
    # Not launchable until the commit has finished.
    assert "owner/my-ide:1" not in {i["slug"] for i in as_owner.get("/api/images/").json()}


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("My-IDE", "not a valid image name"),
        ("-ide", "not a valid image name"),
        (".ide", "not a valid image name"),
        ("", "This field may not be blank"),
        ("a" * 65, "not a valid image name"),
        ("registry.example.org/ide", "looks like a registry path"),
        ("ide:latest", "looks like a registry path"),
        ("ide@sha256:" + "0" * 64, "looks like a registry path"),
        ("sha256:" + "0" * 64, "looks like a registry path"),
        ("lattice/u/stranger/ide", "looks like a registry path"),
        ("stranger/my-ide:1", "looks like a registry path"),
        ("ide", "is the name of a catalog image"),
        ("desktop", "is the name of a catalog image"),
        ("with space", "not a valid image name"),
        # Docker's own rule: separators only between letters and digits.
        ("ide-", "must end with a letter or digit"),
        ("ide.", "must end with a letter or digit"),
        ("a..b", "may only stand between letters and digits"),
        ("a._b", "may only stand between letters and digits"),
        ("a___b", "may only stand between letters and digits"),
        ("a_-b", "may only stand between letters and digits"),
        # The workspace's display container, and a catalog app's container name.
        ("display", "reserved for the workspace's display"),
        ("web.browser", "would run as the container 'web-browser'"),
        ("web_browser", "would run as the container 'web-browser'"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_created(as_owner, workspace, name, words):
    response = commit(as_owner, workspace, name=name)
    assert response.status_code == 400
    assert words in response.json()["detail"]
    assert not Image.objects.filter(owner__isnull=False).exists()


def test_a_container_the_workspace_does_not_have_is_400(as_owner, workspace):
    response = commit(as_owner, workspace, container="office")
    assert response.status_code == 400
    assert "has no container 'office'" in response.json()["detail"]


def test_another_users_workspace_is_404(api_client, stranger, workspace):
    api_client.force_authenticate(stranger)
    assert commit(api_client, workspace).status_code == 404
    assert not Image.objects.filter(owner__isnull=False).exists()


def test_a_second_save_of_the_same_container_at_once_is_409(as_owner, workspace):
    assert commit(as_owner, workspace).status_code == 202
    second = commit(as_owner, workspace, name="other")
    assert second.status_code == 409
    assert "being saved already" in second.json()["detail"]


def test_versions_count_up(as_owner, workspace):
    first = commit(as_owner, workspace).json()
    Image.objects.filter(pk=first["id"]).update(state="ready")
    second = commit(as_owner, workspace).json()
    assert (first["slug"], second["slug"]) == ("owner/my-ide:1", "owner/my-ide:2")


def test_quota_on_count_answers_429_with_the_figures(as_owner, workspace, owner):
    owner.saved_images_max_count = 1
    owner.save()
    first = commit(as_owner, workspace).json()
    Image.objects.filter(pk=first["id"]).update(state="ready")
    response = commit(as_owner, workspace, name="more")
    assert response.status_code == 429
    assert response.json()["detail"] == "You have 1 saved images; the most allowed is 1. Delete one first."


def test_quota_on_size_answers_429_with_the_figures(as_owner, workspace, settings):
    settings.LATTICE_SAVED_IMAGES_MAX_BYTES = 100 * 1024**2
    first = commit(as_owner, workspace).json()
    Image.objects.filter(pk=first["id"]).update(state="ready", added_size=150 * 1024**2)
    response = commit(as_owner, workspace, name="more")
    assert response.status_code == 429
    assert "use 150 MiB; the most allowed is 100 MiB" in response.json()["detail"]


def test_a_workspace_that_is_starting_cannot_be_saved(as_owner, workspace):
    Workspace.objects.filter(pk=workspace.pk).update(state="starting")
    assert commit(as_owner, workspace).status_code == 409


def test_saved_images_are_private(api_client, as_owner, workspace, stranger):
    image_id = commit(as_owner, workspace).json()["id"]
    Image.objects.filter(pk=image_id).update(state="ready")
    assert "owner/my-ide:1" in {i["slug"] for i in as_owner.get("/api/images/").json()}
    api_client.force_authenticate(stranger)
    assert "owner/my-ide:1" not in {i["slug"] for i in api_client.get("/api/images/").json()}
    assert api_client.get(f"/api/saved-images/{image_id}/").status_code == 404
    launch = api_client.post(
        "/api/workspaces/", {"display": "desktop", "apps": ["owner/my-ide:1"]}, format="json"
    )
    # Neither seen nor launched: for another user it does not exist.
    assert launch.status_code == 404
    assert not Workspace.objects.filter(owner=stranger).exists()


def test_owner_renames_and_describes(as_owner, workspace):
    image_id = commit(as_owner, workspace).json()["id"]
    response = as_owner.patch(
        f"/api/saved-images/{image_id}/",
        {"title": "My IDE", "description": "tuned", "slug": "hijack"},
        format="json",
    )
    assert response.status_code == 200
    image = Image.objects.get(pk=image_id)
    assert (image.title, image.description, image.slug) == ("My IDE", "tuned", "owner/my-ide:1")


def test_delete_is_refused_while_a_workspace_uses_it(as_owner, workspace, owner):
    image_id = commit(as_owner, workspace).json()["id"]
    Image.objects.filter(pk=image_id).update(state="ready")
    ws = Workspace.objects.create(owner=owner, display=workspace.display, state="stopped")
    ws.apps.set([image_id])
    response = as_owner.delete(f"/api/saved-images/{image_id}/")
    assert response.status_code == 409
    assert "A workspace uses this image" in response.json()["detail"]
    assert Image.objects.filter(pk=image_id).exists()


def test_delete_removes_the_engine_image_then_the_entry(as_owner, workspace, engine):
    image_id = commit(as_owner, workspace).json()["id"]
    Image.objects.filter(pk=image_id).update(state="ready")
    reference = Image.objects.get(pk=image_id).reference
    assert as_owner.delete(f"/api/saved-images/{image_id}/").status_code == 204
    assert engine.called("remove_image") == [("remove_image", reference)]
    assert not Image.objects.filter(pk=image_id).exists()


def test_delete_the_engine_refuses_is_409_and_keeps_the_entry(as_owner, workspace, engine):
    image_id = commit(as_owner, workspace).json()["id"]
    Image.objects.filter(pk=image_id).update(state="ready")
    engine.fail["remove_image"] = EngineError("The image is still used by a container.")
    response = as_owner.delete(f"/api/saved-images/{image_id}/")
    assert response.status_code == 409
    assert "still used by a container" in response.json()["detail"]
    assert Image.objects.filter(pk=image_id).exists()


def test_delete_of_a_display_a_broadcast_used_is_409_and_keeps_image_and_entry(
    as_owner, workspace, owner, engine
):
    # A teacher broadcasts their own saved display (classrooms offer launchable(teacher)).
    saved = make_saved_image(owner, "my-desk", kind="display", parent=workspace.display)
    Broadcast.objects.create(
        classroom=Classroom.objects.create(name="Physics"), teacher=owner, display=saved, state="ended"
    )
    response = as_owner.delete(f"/api/saved-images/{saved.pk}/")
    assert response.status_code == 409
    assert "broadcast used this image as its display" in response.json()["detail"]
    assert Image.objects.filter(pk=saved.pk).exists()
    assert not engine.called("remove_image")


def test_delete_of_a_display_a_workspace_being_deleted_uses_is_409(as_owner, workspace, owner, engine):
    saved = make_saved_image(owner, "my-desk", kind="display", parent=workspace.display)
    Workspace.objects.create(owner=owner, display=saved, state="stopping", deleting=True)
    response = as_owner.delete(f"/api/saved-images/{saved.pk}/")
    assert response.status_code == 409
    assert "being deleted still uses this image" in response.json()["detail"]
    assert Image.objects.filter(pk=saved.pk).exists()
    assert not engine.called("remove_image")


def test_size_quota_says_saves_under_way_are_not_counted(as_owner, workspace, settings):
    settings.LATTICE_SAVED_IMAGES_MAX_BYTES = 100 * 1024**2
    first = commit(as_owner, workspace).json()
    Image.objects.filter(pk=first["id"]).update(state="ready", added_size=150 * 1024**2)
    assert commit(as_owner, workspace, container="display", name="desk").status_code == 429
    Image.objects.filter(pk=first["id"]).update(added_size=50 * 1024**2)
    assert commit(as_owner, workspace, container="display", name="desk").status_code == 202
    Image.objects.filter(pk=first["id"]).update(added_size=150 * 1024**2)
    response = commit(as_owner, workspace, name="more")
    assert response.status_code == 429
    assert "use 150 MiB (1 still being saved, not counted yet)" in response.json()["detail"]


DOCKER_REFERENCE = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
AWKWARD_USERNAMES = [
    "owner",
    "Bob",
    "a@b",
    "a-40-b",
    "a-b",
    "a--1",
    "a.b",
    "a_b",
    "a__b",
    "-lead",
    "trail.",
    "x+tag@example.org",
    "日本語",
    "ünï",
    "id5",
    "u" * 150,
    "u" * 149 + "v",
]


def test_user_namespaces_are_one_to_one_and_valid_for_docker(settings):
    users = [User.objects.create_user(username=name, password="x") for name in AWKWARD_USERNAMES]
    repositories = [saved_images.repository_for(user, "my-ide") for user in users]
    assert len(set(repositories)) == len(users), repositories
    for repository in repositories:
        assert DOCKER_REFERENCE.fullmatch(repository), repository
        assert len(repository) + len(":99999") <= 255
        assert repository.startswith(f"{settings.LATTICE_ENGINE_PREFIX}/u/")
    by_name = dict(zip(AWKWARD_USERNAMES, repositories, strict=True))
    # Readable: a name Docker takes stays as it is; others keep a readable part.
    assert by_name["owner"] == f"{settings.LATTICE_ENGINE_PREFIX}/u/owner/my-ide"
    assert by_name["a@b"].startswith(f"{settings.LATTICE_ENGINE_PREFIX}/u/a-b--")
    assert by_name["a-b"] == f"{settings.LATTICE_ENGINE_PREFIX}/u/a-b/my-ide"


def test_two_users_whose_names_used_to_collide_save_to_two_tags(api_client, workspace):
    references = []
    for name in ("a@b", "a-40-b"):
        user = User.objects.create_user(username=name, password="x")
        ws = Workspace.objects.create(owner=user, display=workspace.display, state="running")
        ws.apps.set(workspace.apps.all())
        api_client.force_authenticate(user)
        response = commit(api_client, ws)
        assert response.status_code == 202, response.json()
        references.append(Image.objects.get(pk=response.json()["id"]).reference)
    assert references[0] != references[1]


def test_admins_engine_image_list_hides_saved_images(api_client, admin_user, engine, settings):
    engine.images = [
        {"reference": f"{settings.LATTICE_ENGINE_PREFIX}/u/owner/x:1", "labels": {}, "size": 1},
        {"reference": "lattice/new:latest", "labels": {}, "size": 1},
    ]
    api_client.force_authenticate(admin_user)
    listed = [i["reference"] for i in api_client.get("/api/admin/images/engine/").json()]
    assert listed == ["lattice/new:latest"]


def test_summarise_groups_changes_by_folder():
    changes = [
        {"path": "/home/user/.config/geany/geany.conf", "kind": "changed"},
        {"path": "/home/user/notes.txt", "kind": "added"},
        {"path": "/etc/hosts", "kind": "deleted"},
        {"path": "/home/user/.config/geany/plugins", "kind": "added"},
    ]
    assert saved_images.summarise(changes) == {
        "/etc": {"added": 0, "changed": 0, "deleted": 1},
        "/home/user": {"added": 2, "changed": 1, "deleted": 0},
    }


def test_admins_set_a_users_quota_in_the_admin(client, admin_user, owner):
    client.force_login(admin_user)
    page = client.get(f"/django-admin/workspaces/user/{owner.pk}/change/")
    assert page.status_code == 200
    assert b"saved_images_max_count" in page.content and b"saved_images_max_bytes" in page.content
