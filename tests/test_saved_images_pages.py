"""A saved image's page: what changed, rename and describe, delete; strangers see nothing."""

from __future__ import annotations

import pytest

from tests.support.saved_images_fakes import make_saved_image, use_fake_engine
from workspaces.engine.base import EngineError, EngineUnavailable
from workspaces.models import Image, Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def engine(settings):
    return use_fake_engine(settings)


@pytest.fixture
def ide(db):
    return Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="Geany IDE")


@pytest.fixture
def saved(owner, ide):
    return make_saved_image(
        owner,
        "my-ide",
        parent=ide,
        origin="saved from Geany IDE (ide)",
        changes={
            "summary": {"/home/user": {"added": 1, "changed": 0, "deleted": 0}},
            "total": 1,
            "sample": [{"path": "/home/user/notes.txt", "kind": "added"}],
        },
    )


@pytest.fixture
def as_owner(client, owner):
    client.force_login(owner)
    return client


def url(image: Image) -> str:
    return f"/images/{image.pk}/"


def test_the_page_shows_the_parents_title_and_the_added_file(as_owner, saved):
    page = as_owner.get(url(saved)).content.decode()
    assert "Geany IDE" in page and "/home/user/notes.txt" in page


def test_the_parents_title_stays_when_the_parent_is_gone(as_owner, saved, ide):
    ide.delete()
    page = as_owner.get(url(saved)).content.decode()
    assert "Saved from Geany IDE (ide)" in page and "no longer in the catalog" in page


def test_it_rejects_stranger(client, stranger, saved, engine):
    client.force_login(stranger)
    assert client.get(url(saved)).status_code == 404
    assert client.post(url(saved), {"action": "delete"}).status_code == 404
    assert client.post(url(saved), {"action": "update", "title": "mine now"}).status_code == 404
    saved.refresh_from_db()
    assert saved.title == "my-ide (v1)"
    assert not engine.called("remove_image")


def test_owner_renames_and_describes(as_owner, saved):
    response = as_owner.post(url(saved), {"action": "update", "title": " My IDE ", "description": "tuned"})
    assert response.status_code == 302 and response["Location"] == url(saved)
    saved.refresh_from_db()
    assert (saved.title, saved.description, saved.slug) == ("My IDE", "tuned", "owner/my-ide:1")


def test_owner_deletes_a_free_image(as_owner, saved, engine):
    response = as_owner.post(url(saved), {"action": "delete"}, follow=True)
    assert "Deleted owner/my-ide:1." in response.content.decode()
    assert engine.called("remove_image") == [("remove_image", saved.reference)]
    assert not Image.objects.filter(pk=saved.pk).exists()


def test_delete_is_refused_while_a_workspace_uses_it(as_owner, saved, owner, engine):
    display = Image.objects.create(slug="desktop", reference="d", kind="display", title="Desktop")
    Workspace.objects.create(owner=owner, display=display, state="stopped").apps.set([saved])
    response = as_owner.post(url(saved), {"action": "delete"}, follow=True)
    assert "A workspace uses this image; delete that workspace first." in response.content.decode()
    assert Image.objects.filter(pk=saved.pk).exists()
    assert not engine.called("remove_image")


def test_delete_is_refused_while_saving(as_owner, saved, engine):
    Image.objects.filter(pk=saved.pk).update(state="saving")
    response = as_owner.post(url(saved), {"action": "delete"}, follow=True)
    assert "still being saved" in response.content.decode()
    assert Image.objects.filter(pk=saved.pk).exists()


@pytest.mark.parametrize(
    "error",
    [
        EngineError("The image lattice/u/owner/my-ide:1 is still used by a container."),
        EngineUnavailable("The Docker engine is not reachable."),
    ],
)
def test_an_engine_error_on_delete_is_a_message_not_a_500(as_owner, saved, engine, error):
    engine.fail["remove_image"] = error
    response = as_owner.post(url(saved), {"action": "delete"}, follow=True)
    assert response.status_code == 200
    assert str(error) in response.content.decode()
    assert Image.objects.filter(pk=saved.pk).exists()
