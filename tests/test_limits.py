"""Container limits have floors: Docker reads a memory, CPU or pids limit of 0 as
"unlimited", so a 0 (or garbage) from an image's labels, the admin API or page
or a saved entry is refused with a message, never run (engine.specs.limit_problems)."""

from __future__ import annotations

import pytest

from tests.support import catalog_fakes
from workspaces.engine.errors import InvalidSpecError
from workspaces.engine.specs import Limits, limit_problems, max_cpus
from workspaces.models import Image, Workspace
from workspaces.services import catalog, lifecycle

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mem_limit", "0"),
        ("mem_limit", "0g"),
        ("mem_limit", "63m"),
        ("mem_limit", "lots"),
        ("mem_limit", "-1g"),
        ("cpus", 0),
        ("cpus", -1),
        ("cpus", float("nan")),
        ("cpus", "many"),
        ("cpus", max_cpus() + 1),
        ("pids_limit", 0),
        ("pids_limit", -1),
        ("pids_limit", 31),
        ("pids_limit", "x"),
    ],
)
def test_a_zero_or_garbage_limit_is_refused_with_a_message(field, value):
    limits = {"mem_limit": "1g", "cpus": 1.0, "pids_limit": 256, field: value}
    assert set(limit_problems(**limits)) == {field}
    with pytest.raises(InvalidSpecError) as refused:
        Limits(**limits)
    assert repr(value) in str(refused.value)


def test_the_floors_themselves_are_fine():
    assert limit_problems("64m", 0.01, 32) == {}
    Limits(mem_limit="64m", cpus=max_cpus(), pids_limit=32)


def test_labels_that_mean_unlimited_keep_the_image_out_of_the_catalog(settings):
    engine = catalog_fakes.use(settings)
    engine.add("lattice/greedy:latest", {"lattice.kind": "app", "lattice.mem_limit": "0"})
    engine.add("lattice/forky:latest", {"lattice.kind": "app", "lattice.pids_limit": "0"})
    engine.add("lattice/fine:latest", {"lattice.kind": "app", "lattice.cpus": "0.5"})
    refused: list[str] = []
    synced = catalog.sync_from_engine(refused)
    assert [image.slug for image in synced] == ["lattice/fine:latest"]
    assert not Image.objects.filter(slug__in=["lattice/greedy:latest", "lattice/forky:latest"]).exists()
    assert any("lattice.mem_limit" in why and "64m" in why for why in refused)
    assert any("lattice.pids_limit" in why for why in refused)


def test_labels_set_internet_and_it_defaults_to_on():
    assert catalog.fields_from_labels({}, "x")["internet"] is True
    assert catalog.fields_from_labels({"lattice.internet": "0"}, "x")["internet"] is False
    assert catalog.fields_from_labels({"lattice.internet": "0"}, "x", {"internet": True})["internet"] is True


@pytest.fixture
def ide(db):
    return Image.objects.create(slug="ide", reference="lattice/ide:latest", kind="app", title="IDE")


@pytest.mark.parametrize(
    "body",
    [{"mem_limit": "0"}, {"mem_limit": "0g"}, {"cpus": 0}, {"pids_limit": 0}, {"pids_limit": 16}],
)
def test_the_admin_api_answers_400_to_a_limit_that_means_unlimited(api_client, admin_user, ide, body):
    api_client.force_authenticate(admin_user)
    answer = api_client.patch(f"/api/admin/images/{ide.pk}/", body, format="json")
    assert answer.status_code == 400
    field = next(iter(body))
    assert field in answer.json()["errors"]
    ide.refresh_from_db()
    assert (ide.mem_limit, ide.cpus, ide.pids_limit) == ("1g", 1.0, 256)


def test_adding_from_the_engine_refuses_a_zero_limit(api_client, admin_user, settings):
    engine = catalog_fakes.use(settings)
    engine.add("lattice/lab:latest", {"lattice.kind": "app"})
    api_client.force_authenticate(admin_user)
    body = {"reference": "lattice/lab:latest", "slug": "lab", "mem_limit": "0m"}
    answer = api_client.post("/api/admin/images/", body, format="json")
    assert answer.status_code == 400
    assert "64m" in str(answer.json())
    # And a label of 0 is refused too, with the label named.
    engine.add("lattice/zero:latest", {"lattice.kind": "app", "lattice.cpus": "0"})
    answer = api_client.post(
        "/api/admin/images/", {"reference": "lattice/zero:latest", "slug": "zero"}, format="json"
    )
    assert answer.status_code == 400
    assert "lattice.cpus" in answer.json()["detail"]
    assert not Image.objects.filter(slug__in=["lab", "zero"]).exists()


def test_the_admin_page_refuses_a_zero_limit(client, admin_user, ide):
    client.force_login(admin_user)
    form = {"title": "IDE", "mem_limit": "0", "disk_limit": "4g", "cpus": "1", "pids_limit": "256"}
    answer = client.post(f"/manage/images/{ide.pk}/", form, follow=True)
    assert "64m" in answer.content.decode()
    ide.refresh_from_db()
    assert ide.mem_limit == "1g"


def test_an_entry_saved_with_a_zero_limit_never_starts_unlimited(owner, ide):
    desktop = Image.objects.create(
        slug="desktop", reference="lattice/desktop:latest", kind="display", title="Desktop"
    )
    Image.objects.filter(pk=ide.pk).update(mem_limit="0")  # written before limits were checked
    workspace = Workspace.objects.create(owner=owner, display=desktop)
    workspace.apps.add(ide)
    with pytest.raises(InvalidSpecError, match="IDE's limits"):
        lifecycle.spec_for(workspace)
