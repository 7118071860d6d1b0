"""API views for the catalog, workspaces and display tokens (contract: DESIGN.md)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Image, Workspace
from ..services import lifecycle
from ..services.catalog import launchable


class ImageSerializer(serializers.ModelSerializer):
    private = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = ["id", "slug", "title", "kind", "description", "icon", "size", "kiosk", "private"]

    def get_private(self, image: Image) -> bool:
        return image.owner_id is not None


class WorkspaceSerializer(serializers.ModelSerializer):
    display = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    apps = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    containers = serializers.SerializerMethodField()

    class Meta:
        model = Workspace
        fields = ["id", "state", "progress", "message", "display", "apps", "containers", "created"]

    def get_containers(self, ws: Workspace) -> list[dict]:
        return ws.engine_state.get("containers", [])


class LaunchSerializer(serializers.Serializer):
    display = serializers.CharField()
    apps = serializers.ListField(child=serializers.CharField(), required=False, default=list, max_length=8)


def _own_workspace(request: Request, pk: int) -> Workspace:
    # Another user's workspace is "not found", never "forbidden": no existence leak.
    return get_object_or_404(
        Workspace.objects.visible().select_related("display").prefetch_related("apps"),
        pk=pk,
        owner=request.user,
    )


class ImageList(APIView):
    @extend_schema(responses=ImageSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ImageSerializer(launchable(request.user), many=True).data)


class WorkspaceList(APIView):
    @extend_schema(responses=WorkspaceSerializer(many=True))
    def get(self, request: Request) -> Response:
        workspaces = Workspace.objects.visible().filter(owner=request.user).select_related("display")
        return Response(WorkspaceSerializer(workspaces.prefetch_related("apps"), many=True).data)

    @extend_schema(request=LaunchSerializer, responses={202: WorkspaceSerializer})
    def post(self, request: Request) -> Response:
        data = LaunchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ws = lifecycle.launch(request.user, **data.validated_data)
        return Response(WorkspaceSerializer(ws).data, status=202)


class WorkspaceDetail(APIView):
    @extend_schema(responses=WorkspaceSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(WorkspaceSerializer(_own_workspace(request, pk)).data)

    @extend_schema(responses={202: None})
    def delete(self, request: Request, pk: int) -> Response:
        ws = _own_workspace(request, pk)
        lifecycle.delete(ws)
        return Response({"id": ws.pk, "state": "stopping"}, status=202)


class WorkspaceStart(APIView):
    @extend_schema(request=None, responses={202: WorkspaceSerializer})
    def post(self, request: Request, pk: int) -> Response:
        ws = _own_workspace(request, pk)
        lifecycle.start(ws)
        ws.refresh_from_db()
        return Response(WorkspaceSerializer(ws).data, status=202)


class WorkspaceStop(APIView):
    @extend_schema(request=None, responses={202: WorkspaceSerializer})
    def post(self, request: Request, pk: int) -> Response:
        ws = _own_workspace(request, pk)
        lifecycle.stop(ws)
        ws.refresh_from_db()
        return Response(WorkspaceSerializer(ws).data, status=202)


class TokenRequest(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["control", "view"], default="control")


def display_proxy_url(request: Request) -> str:
    """Where browsers reach the display proxy: configured, or this host on the proxy's port."""
    if settings.LATTICE_DISPLAY_PROXY_URL:
        return settings.LATTICE_DISPLAY_PROXY_URL
    scheme = "wss" if request.is_secure() else "ws"
    host = urlsplit(f"//{request.get_host()}").hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.LATTICE_DISPLAY_PROXY_PORT}/"


class DisplayToken(APIView):
    @extend_schema(
        request=TokenRequest,
        responses=inline_serializer(
            "DisplayToken",
            {
                "url": serializers.CharField(),
                "expires_in": serializers.IntegerField(),
                "password": serializers.CharField(),
                "mode": serializers.CharField(),
            },
        ),
    )
    def post(self, request: Request, pk: int) -> Response:
        ws = _own_workspace(request, pk)
        body = TokenRequest(data=request.data)
        body.is_valid(raise_exception=True)
        mode = body.validated_data["mode"]
        token, password = lifecycle.issue_display_token(ws, mode, user=request.user)
        return Response(token_response(request, token, password, mode))


def token_response(request: Request, token: str, password: str, mode: str) -> dict:
    return {
        "url": f"{display_proxy_url(request)}?{urlencode({'token': token})}",
        "expires_in": settings.LATTICE_DISPLAY_TOKEN_TTL,
        "password": password,
        "mode": mode,
    }
