"""The admin catalog API. Every call here is for admins only (403 for others)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..engine.build_context import MAX_UPLOAD_BYTES
from ..engine.specs import limit_problems
from ..models import Image, PublishRequest, Role
from ..services import admin_catalog
from ..services.catalog import check_disk_limit
from .auth import JobSerializer

T = TypeVar("T")


def _disk_limit(value: str) -> str:
    """What a container may write outside /data before the worker stops it (services/disk_watch.py)."""
    try:
        return check_disk_limit(value)
    except ValueError as exc:
        raise serializers.ValidationError(str(exc)) from None


def _limit(field: str) -> Callable[[T], T]:
    """A validator for one limit: engine.specs.limit_problems is the one check
    (a 0 is refused: Docker would read it as "unlimited")."""

    def check(value: T) -> T:
        values: dict[str, object] = {"mem_limit": "1g", "cpus": 1.0, "pids_limit": 256, field: value}
        problem = limit_problems(**values).get(field)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    return check


class IsAdminRole(BasePermission):
    message = "Only administrators manage the catalog."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.role == Role.ADMIN)


class AdminView(APIView):
    permission_classes = [IsAdminRole]


class CatalogImageSerializer(serializers.ModelSerializer):
    groups = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    classrooms = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    in_use = serializers.SerializerMethodField(help_text="Workspaces using it now (pending to running)")
    usage = serializers.SerializerMethodField(
        help_text="What refers to it: workspaces in any state, broadcasts, images saved from it; "
        "delete_blocked says why it cannot be deleted (empty when it can)"
    )

    class Meta:
        model = Image
        fields = [
            "id",
            "slug",
            "reference",
            "kind",
            "title",
            "description",
            "icon",
            "enabled",
            "size",
            "built",
            "mem_limit",
            "disk_limit",
            "cpus",
            "pids_limit",
            "internet",
            "kiosk",
            "visibility",
            "groups",
            "classrooms",
            "origin",
            "in_use",
            "usage",
        ]
        read_only_fields = [
            "id",
            "slug",
            "reference",
            "kind",
            "size",
            "built",
            "origin",
            "in_use",
            "visibility",
        ]

    def _usage(self, image: Image) -> admin_catalog.Usage:
        if not hasattr(image, "_usage"):
            # Counted by the list's own query (admin_catalog.usages), or here for one entry.
            counted = hasattr(image, "usage_running")
            image._usage = admin_catalog.usage_of(image) if counted else admin_catalog.usage(image)
        return image._usage

    def get_in_use(self, image: Image) -> int:
        return self._usage(image).running

    def get_usage(self, image: Image) -> dict:
        usage = self._usage(image)
        return {
            "running": usage.running,
            "workspaces": usage.workspaces,
            "broadcasts": usage.broadcasts,
            "descendants": usage.descendants,
            "delete_blocked": usage.blocker(image.slug),
        }

    def validate_mem_limit(self, value: str) -> str:
        return _limit("mem_limit")(value)

    def validate_disk_limit(self, value: str) -> str:
        return _disk_limit(value)

    def validate_cpus(self, value: float) -> float:
        return _limit("cpus")(value)

    def validate_pids_limit(self, value: int) -> int:
        return _limit("pids_limit")(value)


class EntryFields(serializers.Serializer):
    slug = serializers.CharField(max_length=64)
    kind = serializers.ChoiceField(choices=["display", "app"], required=False)
    title = serializers.CharField(max_length=120, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    icon = serializers.CharField(max_length=16, required=False, allow_blank=True)
    mem_limit = serializers.CharField(max_length=16, required=False, validators=[_limit("mem_limit")])
    disk_limit = serializers.CharField(max_length=16, required=False, validators=[_disk_limit])
    cpus = serializers.FloatField(required=False, validators=[_limit("cpus")])
    pids_limit = serializers.IntegerField(required=False, validators=[_limit("pids_limit")])
    # Unset: the image's lattice.internet label decides (no label: internet on).
    internet = serializers.BooleanField(required=False, allow_null=True, default=None)
    # Unset: the image's lattice.kiosk label decides.
    kiosk = serializers.BooleanField(required=False, allow_null=True, default=None)
    visibility = serializers.ChoiceField(choices=["everyone", "groups", "classrooms"], default="everyone")
    groups = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    classrooms = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)


class AddFromEngine(EntryFields):
    reference = serializers.CharField(max_length=255)


class CatalogList(AdminView):
    @extend_schema(responses=CatalogImageSerializer(many=True))
    def get(self, request: Request) -> Response:
        images = admin_catalog.usages(
            Image.objects.filter(owner=None).prefetch_related("groups", "classrooms")
        )
        return Response(CatalogImageSerializer(images, many=True).data)

    @extend_schema(request=AddFromEngine, responses={201: CatalogImageSerializer})
    def post(self, request: Request) -> Response:
        """Add an image the engine already has."""
        body = AddFromEngine(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        image = admin_catalog.add_from_engine(fields.pop("reference"), fields)
        return Response(CatalogImageSerializer(image).data, status=201)


class EngineImages(AdminView):
    """Images on the engine that are not in the catalog yet, with their Lattice labels."""

    def get(self, request: Request) -> Response:
        return Response(admin_catalog.engine_images_not_in_catalog())


class BuildRequest(EntryFields):
    folder = serializers.CharField(required=False, allow_blank=True, default="")
    context = serializers.FileField(required=False)


class CatalogBuild(AdminView):
    """Build from a folder of images/ or an uploaded context; the log streams as job-log events."""

    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(request=BuildRequest, responses={202: JobSerializer})
    def post(self, request: Request) -> Response:
        body = BuildRequest(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        upload = fields.pop("context", None)
        folder = fields.pop("folder", "")
        if upload is not None and upload.size > MAX_UPLOAD_BYTES:
            raise serializers.ValidationError(
                {
                    "detail": f"The upload is over {filesizeformat(MAX_UPLOAD_BYTES)}; a build context should be small."
                }
            )
        payload = (upload, upload.name) if upload else None
        job = admin_catalog.queue_build(request.user, fields, folder=folder, upload=payload)
        return Response(JobSerializer(job).data, status=202)


class PullRequest(EntryFields):
    reference = serializers.CharField(max_length=255)


class CatalogPull(AdminView):
    @extend_schema(request=PullRequest, responses={202: JobSerializer})
    def post(self, request: Request) -> Response:
        body = PullRequest(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        job = admin_catalog.queue_pull(request.user, fields.pop("reference"), fields)
        return Response(JobSerializer(job).data, status=202)


class VisibilityRequest(serializers.Serializer):
    visibility = serializers.ChoiceField(choices=["everyone", "groups", "classrooms"])
    groups = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    classrooms = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)


class CatalogDetail(AdminView):
    def _image(self, pk: int) -> Image:
        return get_object_or_404(Image.objects.filter(owner=None), pk=pk)

    @extend_schema(responses=CatalogImageSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(CatalogImageSerializer(self._image(pk)).data)

    @extend_schema(request=CatalogImageSerializer, responses=CatalogImageSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        """Edit metadata, limits (used from the next launch) and enabled; and who sees it."""
        image = self._image(pk)
        serializer = CatalogImageSerializer(image, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            if "visibility" in request.data:
                seen = VisibilityRequest(data=request.data)
                seen.is_valid(raise_exception=True)
                admin_catalog.set_visibility(image, **seen.validated_data)
            serializer.save()
        return Response(CatalogImageSerializer(image).data)

    @extend_schema(responses={204: None, 200: inline_serializer("Note", {"detail": serializers.CharField()})})
    def delete(self, request: Request, pk: int) -> Response:
        """Refused (409) while workspaces, broadcasts or saved images refer to it; 200 with a note
        when the entry went but the engine kept its image."""
        image = self._image(pk)
        note = admin_catalog.delete(image)
        return Response({"detail": note}, status=200) if note else Response(status=204)


class ReviewSerializer(serializers.ModelSerializer):
    image = serializers.SerializerMethodField()
    requested_by = serializers.CharField(source="requested_by.username")
    published = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = PublishRequest
        fields = ["id", "image", "requested_by", "note", "state", "reason", "published", "created", "decided"]

    def get_image(self, request: PublishRequest) -> dict:
        image = request.image
        return {
            "id": image.pk,
            "slug": image.slug,
            "title": image.title,
            "kind": image.kind,
            "parent": image.parent.slug if image.parent else None,
            "size": image.size,
            "added_size": image.added_size,
            "changes": image.changes.get("summary", {}),
        }


class ReviewList(AdminView):
    @extend_schema(responses=ReviewSerializer(many=True))
    def get(self, request: Request) -> Response:
        reviews = PublishRequest.objects.select_related("image__parent", "requested_by", "published")
        return Response(ReviewSerializer(reviews, many=True).data)


class ApproveRequest(serializers.Serializer):
    slug = serializers.CharField(max_length=64)
    title = serializers.CharField(max_length=120, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=["everyone", "groups", "classrooms"], default="everyone")
    groups = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    classrooms = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)


class ReviewApprove(AdminView):
    @extend_schema(request=ApproveRequest, responses={201: CatalogImageSerializer})
    def post(self, request: Request, pk: int) -> Response:
        review = get_object_or_404(PublishRequest, pk=pk)
        body = ApproveRequest(data=request.data)
        body.is_valid(raise_exception=True)
        image = admin_catalog.approve(review, request.user, dict(body.validated_data))
        return Response(CatalogImageSerializer(image).data, status=201)


class RejectRequest(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class ReviewReject(AdminView):
    @extend_schema(request=RejectRequest, responses=ReviewSerializer)
    def post(self, request: Request, pk: int) -> Response:
        review = get_object_or_404(PublishRequest, pk=pk)
        body = RejectRequest(data=request.data)
        body.is_valid(raise_exception=True)
        admin_catalog.reject(review, request.user, body.validated_data["reason"])  # refreshes review
        return Response(ReviewSerializer(review).data)


class SubmitRequest(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class SubmitForPublishing(APIView):
    """A user asks for their saved image to join the catalog."""

    @extend_schema(request=SubmitRequest, responses={201: ReviewSerializer})
    def post(self, request: Request, pk: int) -> Response:
        image = get_object_or_404(Image, pk=pk, owner=request.user)
        body = SubmitRequest(data=request.data)
        body.is_valid(raise_exception=True)
        review = admin_catalog.submit(image, request.user, body.validated_data["note"])
        return Response(ReviewSerializer(review).data, status=201)
