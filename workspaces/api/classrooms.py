"""Classroom API: members, broadcasts, the class's screens, demo, end and collect."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import classrooms, jobs, lifecycle, refusals, teaching, thumbnails
from ..models import Broadcast, Classroom, Role, Seat, Workspace
from .auth import JobSerializer
from .workspaces import token_response


def _taught(request: Request, pk: int) -> Classroom:
    """A classroom this user teaches; anyone else (another teacher too) gets 404."""
    return get_object_or_404(classrooms.teaching(request.user), pk=pk)


class ClassroomSerializer(serializers.ModelSerializer):
    teachers = serializers.SlugRelatedField(slug_field="username", many=True, read_only=True)
    students = serializers.SerializerMethodField()

    class Meta:
        model = Classroom
        fields = ["id", "name", "join_code", "teachers", "students", "created"]

    def get_students(self, classroom: Classroom) -> list[str]:
        return sorted(s.username for s in classroom.students.all())


class StudentClassroomSerializer(serializers.ModelSerializer):
    teachers = serializers.SlugRelatedField(slug_field="username", many=True, read_only=True)

    class Meta:
        model = Classroom
        fields = ["id", "name", "teachers"]


class CreateClassroom(serializers.Serializer):
    name = serializers.CharField(max_length=80)
    students = serializers.ListField(child=serializers.CharField(), required=False, default=list)


class ClassroomList(APIView):
    @extend_schema(responses=ClassroomSerializer(many=True))
    def get(self, request: Request) -> Response:
        if request.user.role == Role.STUDENT:
            return Response(StudentClassroomSerializer(request.user.classrooms.all(), many=True).data)
        return Response(ClassroomSerializer(classrooms.teaching(request.user), many=True).data)

    @extend_schema(request=CreateClassroom, responses={201: ClassroomSerializer})
    def post(self, request: Request) -> Response:
        if request.user.role != Role.TEACHER:
            raise PermissionDenied("Only teachers create classrooms.")
        body = CreateClassroom(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        classroom = classrooms.create(request.user, data["name"], data["students"])
        return Response(ClassroomSerializer(classroom).data, status=201)


class ClassroomDetail(APIView):
    @extend_schema(responses=ClassroomSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(ClassroomSerializer(_taught(request, pk)).data)


class AddStudents(serializers.Serializer):
    students = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    csv = serializers.CharField(required=False, allow_blank=True, default="")


class ClassroomStudents(APIView):
    """Add students by username, or from a CSV whose first column is the username."""

    @extend_schema(request=AddStudents, responses=ClassroomSerializer)
    def post(self, request: Request, pk: int) -> Response:
        classroom = _taught(request, pk)
        body = AddStudents(data=request.data)
        body.is_valid(raise_exception=True)
        names = body.validated_data["students"] + classrooms.usernames_from_csv(body.validated_data["csv"])
        if not names:
            raise serializers.ValidationError({"detail": "Name at least one student, or upload a CSV."})
        classrooms.add_students(classroom, names)
        return Response(ClassroomSerializer(classroom).data)


class AddTeacher(serializers.Serializer):
    username = serializers.CharField()


class ClassroomTeachers(APIView):
    @extend_schema(request=AddTeacher, responses=ClassroomSerializer)
    def post(self, request: Request, pk: int) -> Response:
        classroom = _taught(request, pk)
        body = AddTeacher(data=request.data)
        body.is_valid(raise_exception=True)
        classrooms.add_teacher(classroom, body.validated_data["username"])
        return Response(ClassroomSerializer(classroom).data)


class JoinRequest(serializers.Serializer):
    code = serializers.CharField(max_length=16)


class JoinClassroom(APIView):
    @extend_schema(request=JoinRequest, responses=StudentClassroomSerializer)
    def post(self, request: Request) -> Response:
        body = JoinRequest(data=request.data)
        body.is_valid(raise_exception=True)
        classroom = classrooms.join(request.user, body.validated_data["code"])
        return Response(StudentClassroomSerializer(classroom).data)


class BroadcastRequest(serializers.Serializer):
    display = serializers.CharField()
    apps = serializers.ListField(child=serializers.CharField(), required=False, default=list, max_length=8)
    files = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)


class SeatSerializer(serializers.ModelSerializer):
    """One student's part; once started, its state follows the workspace (stopped, restarted…)."""

    username = serializers.CharField(source="student.username")
    state = serializers.SerializerMethodField()
    message = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Seat
        fields = ["username", "workspace", "state", "message", "progress", "files", "attempts"]

    def get_state(self, seat: Seat) -> str:
        return classrooms.displayed_state(seat)[0]

    def get_message(self, seat: Seat) -> str:
        return classrooms.displayed_state(seat)[1]

    def get_progress(self, seat: Seat) -> int:
        return seat.workspace.progress if seat.workspace else 0


class BroadcastSerializer(serializers.ModelSerializer):
    display = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    apps = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    students = SeatSerializer(source="seats", many=True, read_only=True)

    class Meta:
        model = Broadcast
        fields = ["id", "classroom", "state", "display", "apps", "files", "created", "students"]


class ClassroomBroadcasts(APIView):
    @extend_schema(request=BroadcastRequest, responses={202: BroadcastSerializer})
    def post(self, request: Request, pk: int) -> Response:
        classroom = _taught(request, pk)
        body = BroadcastRequest(data=request.data)
        body.is_valid(raise_exception=True)
        sent = classrooms.broadcast(classroom, request.user, **body.validated_data)
        return Response(BroadcastSerializer(sent).data, status=202)


def _broadcast(request: Request, pk: int) -> Broadcast:
    return get_object_or_404(
        Broadcast.objects.filter(classroom__teachers=request.user).prefetch_related(
            "seats__student", "seats__workspace"
        ),
        pk=pk,
    )


class BroadcastDetail(APIView):
    @extend_schema(responses=BroadcastSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(BroadcastSerializer(_broadcast(request, pk)).data)


class RetrySeat(APIView):
    """Start one failed (or interrupted) student's seat again; the failed workspace is removed."""

    @extend_schema(request=None, responses={202: SeatSerializer})
    def post(self, request: Request, pk: int, username: str) -> Response:
        seat = get_object_or_404(
            Seat.objects.select_related("broadcast", "student", "workspace"),
            broadcast_id=pk,
            broadcast__classroom__teachers=request.user,
            student__username=username.lower(),
        )
        seat = classrooms.retry(seat)
        return Response(SeatSerializer(seat).data, status=202)


class StopClass(APIView):
    """Stop every workspace the class's broadcasts started; starts still queued are cancelled."""

    @extend_schema(request=None, responses={202: None})
    def post(self, request: Request, pk: int) -> Response:
        stopped = classrooms.stop_all(_taught(request, pk))
        return Response({"stopping": stopped}, status=202)


class CollectClass(APIView):
    @extend_schema(request=None, responses={202: JobSerializer})
    def post(self, request: Request, pk: int) -> Response:
        from ..tasks import collect_classroom

        classroom = _taught(request, pk)
        job = jobs.queue_job(
            request.user, "collect", lambda job_id: collect_classroom.delay(job_id, classroom.pk)
        )
        return Response(JobSerializer(job).data, status=202)


class ScreenToken(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["view", "control"], default="view")


def _control_session(request: Request) -> str:
    """Which of the teacher's pages controls: the viewer page names itself in the URL."""
    body = request.data if hasattr(request.data, "get") else {}
    return request.query_params.get("session") or body.get("session") or "api"


def _student_workspace(request: Request, pk: int, username: str) -> Workspace:
    return classrooms.student_workspace(_taught(request, pk), username)


class StudentScreenToken(APIView):
    """A teacher's token to one student's screen; control mode shows the student a notice."""

    @extend_schema(request=ScreenToken)
    def post(self, request: Request, pk: int, username: str) -> Response:
        workspace = _student_workspace(request, pk, username)
        body = ScreenToken(data=request.data)
        body.is_valid(raise_exception=True)
        mode = body.validated_data["mode"]
        session = teaching.check_session(_control_session(request))
        # A control connection belongs to its session: releasing that closes it.
        scopes = (teaching.control_scope(workspace, request.user, session),) if mode == "control" else ()
        token, password = lifecycle.issue_display_token(workspace, mode, scopes=scopes)
        if mode == "control":
            teaching.start_control(request.user, workspace, session)
        return Response(token_response(request, token, password, mode))


class ReleaseControl(APIView):
    """End one control session (?session=, as the viewer page sends it when it closes)."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, pk: int, username: str) -> Response:
        workspace = _student_workspace(request, pk, username)
        teaching.end_control(workspace, request.user, _control_session(request))
        return Response(status=204)


class RenewControl(APIView):
    """Keep one control session alive: the viewer page calls it every 30 seconds."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, pk: int, username: str) -> Response:
        workspace = _student_workspace(request, pk, username)
        teaching.start_control(request.user, workspace, _control_session(request))
        return Response(status=204)


class StudentThumbnail(APIView):
    """A small, recent picture of a student's screen (refreshed at most every few seconds)."""

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request: Request, pk: int, username: str) -> HttpResponse:
        workspace = _student_workspace(request, pk, username)
        if workspace.state != "running":
            raise refusals.Conflict(f"{username}'s workspace is {workspace.state}.")
        png = thumbnails.picture(workspace.pk)
        if png is None:
            raise refusals.Unavailable(
                f"{username}'s screen has not answered yet; the picture follows shortly."
            )
        response = HttpResponse(png, content_type="image/png")
        response["Cache-Control"] = f"private, max-age={thumbnails.MAX_AGE}"
        return response


class DemoRequest(serializers.Serializer):
    workspace = serializers.IntegerField()


class Demo(APIView):
    """The teacher shows one of their running workspaces to the whole class, view-only."""

    @extend_schema(request=DemoRequest, responses={202: None})
    def post(self, request: Request, pk: int) -> Response:
        classroom = _taught(request, pk)
        body = DemoRequest(data=request.data)
        body.is_valid(raise_exception=True)
        workspace = get_object_or_404(
            Workspace.objects.visible(), pk=body.validated_data["workspace"], owner=request.user
        )
        teaching.start_demo(classroom, workspace)
        return Response({"active": True, "workspace": workspace.pk}, status=202)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        teaching.end_demo(_taught(request, pk))
        return Response(status=204)


class DemoToken(APIView):
    """A student's view-only token to the teacher's demo."""

    @extend_schema(request=None)
    def post(self, request: Request, pk: int) -> Response:
        classroom = get_object_or_404(request.user.classrooms.all(), pk=pk)
        token, password = teaching.demo_token(classroom, request.user)
        return Response(token_response(request, token, password, "view"))


class Notices(APIView):
    """What a page must show at load: workspaces a broadcast opened, control, demos."""

    @extend_schema(responses={200: None})
    def get(self, request: Request) -> Response:
        return Response(teaching.pending(request.user))


class DismissNotice(APIView):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        teaching.dismiss(request.user, pk)
        return Response(status=204)
