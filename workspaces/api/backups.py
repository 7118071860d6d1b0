"""API views for the backups of the user's own data volume."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import DataSnapshot
from ..services import jobs
from .auth import JobSerializer


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = DataSnapshot
        fields = ["id", "created", "checked", "size", "sha256", "reason"]


class Backups(APIView):
    @extend_schema(responses=SnapshotSerializer(many=True))
    def get(self, request: Request) -> Response:
        """The user's backups in object storage, newest first."""
        return Response(SnapshotSerializer(request.user.snapshots.all(), many=True).data)

    @extend_schema(request=None, responses={202: JobSerializer})
    def post(self, request: Request) -> Response:
        """Back up the user's files now; the job's progress arrives as events."""
        user = request.user
        job = jobs.queue_job(
            user, "backup", "workspaces.tasks.backup.back_up", user_id=user.pk, reason="asked"
        )
        return Response(JobSerializer(job).data, status=202)
