from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Job
from ..services import jobs


class ObtainToken(APIView):
    """Exchange a username and password for an API token (``Authorization: Token <key>``)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        request=AuthTokenSerializer,
        responses=inline_serializer("TokenResponse", {"token": serializers.CharField()}),
    )
    def post(self, request: Request) -> Response:
        # django-axes marks the Django request, not DRF's wrapper, on lockout;
        # its middleware then answers 429 with the same words as the login page.
        serializer = AuthTokenSerializer(data=request.data, context={"request": request._request})
        serializer.is_valid(raise_exception=True)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.CharField()


class Me(APIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response({"username": request.user.username, "role": request.user.role})


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        # log: a build's output so far, so a page that opens late can show it all.
        fields = ["id", "kind", "state", "progress", "message", "result", "log", "created", "finished"]


class Diagnostics(APIView):
    """Queue a check of every service a workspace needs; progress arrives as events."""

    @extend_schema(request=None, responses={202: JobSerializer})
    def post(self, request: Request) -> Response:
        job = jobs.queue_job(request.user, "diagnostics", "workspaces.tasks.diagnostics.run_diagnostics")
        return Response(JobSerializer(job).data, status=202)


class JobDetail(APIView):
    @extend_schema(responses=JobSerializer)
    def get(self, request: Request, pk: int) -> Response:
        job = get_object_or_404(Job, pk=pk, owner=request.user)
        return Response(JobSerializer(job).data)
