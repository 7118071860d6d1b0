"""Saving containers as images, and the owner's management of those images."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Image, Workspace
from ..services import saved_images


class SavedImageSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Image
        fields = [
            "id",
            "slug",
            "name",
            "version",
            "title",
            "description",
            "kind",
            "state",
            "message",
            "parent",
            "created_by",
            "created",
            "size",
            "added_size",
            "changes",
        ]
        read_only_fields = [f for f in fields if f not in ("title", "description")]


class CommitRequest(serializers.Serializer):
    name = serializers.CharField(max_length=200, trim_whitespace=False)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class CommitContainer(APIView):
    """Save one container of your workspace as a new private image (202; ready when state is "ready")."""

    @extend_schema(request=CommitRequest, responses={202: SavedImageSerializer})
    def post(self, request: Request, pk: int, name: str) -> Response:
        workspace = get_object_or_404(Workspace.objects.visible(), pk=pk, owner=request.user)
        body = CommitRequest(data=request.data)
        body.is_valid(raise_exception=True)
        image = saved_images.save(
            workspace, name, body.validated_data["name"], body.validated_data["description"]
        )

        return Response(SavedImageSerializer(image).data, status=202)


def _own_image(request: Request, pk: int) -> Image:
    return get_object_or_404(Image.objects.select_related("parent", "owner"), pk=pk, owner=request.user)


class SavedImageList(APIView):
    @extend_schema(responses=SavedImageSerializer(many=True))
    def get(self, request: Request) -> Response:
        images = (
            Image.objects.filter(owner=request.user).select_related("parent", "owner").order_by("-created")
        )
        return Response(SavedImageSerializer(images, many=True).data)


class SavedImageDetail(APIView):
    @extend_schema(responses=SavedImageSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(SavedImageSerializer(_own_image(request, pk)).data)

    @extend_schema(request=SavedImageSerializer, responses=SavedImageSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        """Rename (title) and describe; the engine's tag stays as it was saved."""
        serializer = SavedImageSerializer(_own_image(request, pk), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return Response(serializer.data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        image = _own_image(request, pk)
        saved_images.delete(image)
        return Response(status=204)
