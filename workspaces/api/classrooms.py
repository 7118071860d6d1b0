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

from ..lib import refusals
from ..models import AuditEvent, Broadcast, Classroom, Role, Seat, Workspace
from ..services import classrooms, jobs, lifecycle, teaching, thumbnails
from .admin_catalog import IsAdminRole
from .auth import JobSerializer
from .workspaces import token_response


class AdminsOnly(IsAdminRole):
    message = "Only administrators may do this."


def _taught(request: Request, pk: int) -> Classroom:
    """A classroom this user teaches; anyone else (another teacher too) gets 404."""
    return get_object_or_404(classrooms.taught_by(request.user), pk=pk)


class ClassroomSerializer(serializers.ModelSerializer):
    """A class as its teachers see it: members, and the invited who have not accepted yet."""

    teachers = serializers.SlugRelatedField(slug_field="username", many=True, read_only=True)
    students = serializers.SerializerMethodField()
    invited = serializers.SerializerMethodField()

    class Meta:
        model = Classroom
        fields = ["id", "name", "join_code", "teachers", "students", "invited", "created"]

    def get_students(self, classroom: Classroom) -> list[str]:
        return sorted(s.username for s in classroom.students.all())

    def get_invited(self, classroom: Classroom) -> list[str]:
        return sorted(s.username for s in classroom.invited.all())


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
        return Response(ClassroomSerializer(classrooms.taught_by(request.user), many=True).data)

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


def _names(request: Request) -> list[str]:
    body = AddStudents(data=request.data)
    body.is_valid(raise_exception=True)
    names = body.validated_data["students"] + classrooms.usernames_from_csv(body.validated_data["csv"])
    if not names:
        raise serializers.ValidationError({"detail": "Name at least one student, or upload a CSV."})
    return names


class ClassroomStudents(APIView):
    """Invite students by username, or from a CSV whose first column is the username.

    They become members when they accept (or join with the code); until then
    they are listed as invited and get nothing of the class.
    """

    @extend_schema(request=AddStudents, responses=ClassroomSerializer)
    def post(self, request: Request, pk: int) -> Response:
        classroom = _taught(request, pk)
        classrooms.add_students(classroom, request.user, _names(request))
        return Response(ClassroomSerializer(classroom).data)


class PlaceStudents(APIView):
    """An admin puts students in any class directly: members at once, no invitation."""

    permission_classes = [AdminsOnly]

    @extend_schema(request=AddStudents, responses=ClassroomSerializer)
    def post(self, request: Request, pk: int) -> Response:
        classroom = get_object_or_404(Classroom, pk=pk)
        classrooms.place(classroom, request.user, _names(request))
        return Response(ClassroomSerializer(classroom).data)


class Invitations(APIView):
    """The classes that invited this student and wait for their answer."""

    @extend_schema(responses=StudentClassroomSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(StudentClassroomSerializer(request.user.invitations.all(), many=True).data)


class AcceptInvitation(APIView):
    @extend_schema(request=None, responses=StudentClassroomSerializer)
    def post(self, request: Request, pk: int) -> Response:
        return Response(StudentClassroomSerializer(classrooms.accept(request.user, pk)).data)


class DeclineInvitation(APIView):
    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, pk: int) -> Response:
        classrooms.decline(request.user, pk)
        return Response(status=204)


class LeaveClassroom(APIView):
    """A student leaves a class: its teachers' views and control of their screens end now."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, pk: int) -> Response:
        classrooms.leave(request.user, pk)
        return Response(status=204)


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
            classrooms.member_seats_prefetch()
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
            # A student who left the class is nobody's to start again through it.
            classrooms.members_seats(Seat.objects.select_related("broadcast", "student", "workspace")),
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
        classroom = _taught(request, pk)
        job = jobs.queue_job(
            request.user, "collect", "workspaces.tasks.classroom.collect_classroom", classroom_id=classroom.pk
        )
        return Response(JobSerializer(job).data, status=202)


class ScreenToken(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["view", "control"], default="view")


def _control_session(request: Request) -> str:
    """Which of the teacher's pages controls: the viewer page names itself in the URL."""
    body = request.data if hasattr(request.data, "get") else {}
    return request.query_params.get("session") or body.get("session") or "api"


def _screen(request: Request, pk: int, username: str) -> tuple[Classroom, Workspace]:
    """A member's screen in a class this user teaches (404 for anyone else, or anyone who left)."""
    classroom = _taught(request, pk)
    return classroom, classrooms.student_workspace(classroom, username)


def _start_session(
    request: Request, classroom: Classroom, workspace: Workspace, mode: str, session: str
) -> None:
    """Start (or renew) a session on a member's screen; 404 when they left meanwhile.

    _screen checked membership before; a leave() that ran since found no session
    to end, so this one is ended here (its connections too) rather than outlive it.
    """
    if mode == teaching.GRID:
        teaching.start_grid(request.user, workspace, session, classroom)
    else:
        teaching.start_session(request.user, workspace, mode, session, classroom)
    if not classrooms.is_member(classroom, workspace.owner_id):
        teaching.end_session(workspace, request.user, session, mode, reason="the student left the class")
        raise refusals.Missing("No workspace of that student in this classroom.")


def _student_workspace(request: Request, pk: int, username: str) -> Workspace:
    return _screen(request, pk, username)[1]


class StudentScreenToken(APIView):
    """A teacher's token to one student's screen: view or control, one session, which the student sees."""

    @extend_schema(request=ScreenToken)
    def post(self, request: Request, pk: int, username: str) -> Response:
        classroom, workspace = _screen(request, pk, username)
        body = ScreenToken(data=request.data)
        body.is_valid(raise_exception=True)
        mode = body.validated_data["mode"]
        session = teaching.check_session(_control_session(request))
        teaching.check_open(workspace, request.user, session)  # a late request of a closed page
        # A connection belongs to its session: ending that (release, expiry, the student leaving) closes it.
        scopes = (teaching.session_scope(workspace, request.user, session, mode),)
        token, password = lifecycle.issue_display_token(workspace, mode, scopes=scopes, user=request.user)
        _start_session(request, classroom, workspace, mode, session)
        return Response(token_response(request, token, password, mode))


class ReleaseControl(APIView):
    """End one page's session, view or control (?session=, as the viewer page sends it when it closes)."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, pk: int, username: str) -> Response:
        workspace = _student_workspace(request, pk, username)
        teaching.end_session(workspace, request.user, _control_session(request))
        return Response(status=204)


class RenewControl(APIView):
    """Keep one session alive (?session=, ?mode=view|control, default control): the viewer page calls it every 30 s."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, pk: int, username: str) -> Response:
        classroom, workspace = _screen(request, pk, username)
        mode = request.query_params.get("mode", teaching.CONTROL)
        if mode not in (teaching.CONTROL, teaching.VIEW):
            raise serializers.ValidationError({"detail": "mode is view or control."})
        _start_session(request, classroom, workspace, mode, _control_session(request))
        return Response(status=204)


class ReleaseGrid(APIView):
    """The grid page closed (?session=): the students stop being shown as seen in the grid."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, pk: int) -> Response:
        classroom = _taught(request, pk)
        teaching.end_grid(request.user, classroom, _control_session(request))
        return Response(status=204)


class StudentThumbnail(APIView):
    """A small, recent picture of a student's screen (refreshed at most every few seconds)."""

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request: Request, pk: int, username: str) -> HttpResponse:
        classroom, workspace = _screen(request, pk, username)
        if workspace.state != "running":
            raise refusals.Conflict(f"{username}'s workspace is {workspace.state}.")
        # Seeing the picture is watching: the student is told while the grid asks for it.
        _start_session(request, classroom, workspace, teaching.GRID, _control_session(request))
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


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name")
    subject = serializers.CharField(source="subject_name")

    class Meta:
        model = AuditEvent
        fields = ["id", "created", "action", "actor", "subject", "mode", "workspace", "classroom", "detail"]


class AuditLog(APIView):
    """The audit log, newest first (admins only): ?action=, ?actor=, ?subject=, ?limit= (at most 500)."""

    permission_classes = [AdminsOnly]

    @extend_schema(responses=AuditEventSerializer(many=True))
    def get(self, request: Request) -> Response:
        events = AuditEvent.objects.all()
        params = request.query_params
        if params.get("action"):
            events = events.filter(action__startswith=params["action"])
        for name in ("actor", "subject"):
            if params.get(name):
                events = events.filter(**{f"{name}_name": params[name].lower()})
        try:
            limit = min(max(int(params.get("limit", 100)), 1), 500)
        except ValueError:
            raise serializers.ValidationError({"detail": "limit is a number from 1 to 500."}) from None
        return Response(AuditEventSerializer(events[:limit], many=True).data)
