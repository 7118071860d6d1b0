from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import admin_catalog, auth, backups, classrooms, saved_images, workspaces

urlpatterns = [
    path("auth/token/", auth.ObtainToken.as_view(), name="api-token"),
    path("me/", auth.Me.as_view(), name="api-me"),
    path("jobs/diagnostics/", auth.Diagnostics.as_view(), name="api-diagnostics"),
    path("jobs/<int:pk>/", auth.JobDetail.as_view(), name="api-job"),
    path("backups/", backups.Backups.as_view(), name="api-backups"),
    path("images/", workspaces.ImageList.as_view(), name="api-images"),
    path("workspaces/", workspaces.WorkspaceList.as_view(), name="api-workspaces"),
    path("workspaces/<int:pk>/", workspaces.WorkspaceDetail.as_view(), name="api-workspace"),
    path("workspaces/<int:pk>/start/", workspaces.WorkspaceStart.as_view(), name="api-workspace-start"),
    path("workspaces/<int:pk>/stop/", workspaces.WorkspaceStop.as_view(), name="api-workspace-stop"),
    path("workspaces/<int:pk>/display-token/", workspaces.DisplayToken.as_view(), name="api-display-token"),
    path(
        "workspaces/<int:pk>/containers/<str:name>/commit/",
        saved_images.CommitContainer.as_view(),
        name="api-commit",
    ),
    path("saved-images/", saved_images.SavedImageList.as_view(), name="api-saved-images"),
    path("saved-images/<int:pk>/", saved_images.SavedImageDetail.as_view(), name="api-saved-image"),
    path("classrooms/", classrooms.ClassroomList.as_view(), name="api-classrooms"),
    path("classrooms/join/", classrooms.JoinClassroom.as_view(), name="api-classroom-join"),
    path("classrooms/invitations/", classrooms.Invitations.as_view(), name="api-classroom-invitations"),
    path("classrooms/<int:pk>/", classrooms.ClassroomDetail.as_view(), name="api-classroom"),
    path("classrooms/<int:pk>/accept/", classrooms.AcceptInvitation.as_view(), name="api-classroom-accept"),
    path(
        "classrooms/<int:pk>/decline/", classrooms.DeclineInvitation.as_view(), name="api-classroom-decline"
    ),
    path("classrooms/<int:pk>/leave/", classrooms.LeaveClassroom.as_view(), name="api-classroom-leave"),
    path(
        "classrooms/<int:pk>/grid/release/",
        classrooms.ReleaseGrid.as_view(),
        name="api-classroom-grid-release",
    ),
    path(
        "classrooms/<int:pk>/students/", classrooms.ClassroomStudents.as_view(), name="api-classroom-students"
    ),
    path(
        "classrooms/<int:pk>/teachers/", classrooms.ClassroomTeachers.as_view(), name="api-classroom-teachers"
    ),
    path("classrooms/<int:pk>/broadcasts/", classrooms.ClassroomBroadcasts.as_view(), name="api-broadcasts"),
    path("classrooms/<int:pk>/stop/", classrooms.StopClass.as_view(), name="api-classroom-stop"),
    path("classrooms/<int:pk>/collect/", classrooms.CollectClass.as_view(), name="api-classroom-collect"),
    path("classrooms/<int:pk>/demo/", classrooms.Demo.as_view(), name="api-classroom-demo"),
    path("classrooms/<int:pk>/demo/token/", classrooms.DemoToken.as_view(), name="api-classroom-demo-token"),
    path(
        "classrooms/<int:pk>/students/<str:username>/display-token/",
        classrooms.StudentScreenToken.as_view(),
        name="api-student-token",
    ),
    path(
        "classrooms/<int:pk>/students/<str:username>/release/",
        classrooms.ReleaseControl.as_view(),
        name="api-student-release",
    ),
    path(
        "classrooms/<int:pk>/students/<str:username>/renew/",
        classrooms.RenewControl.as_view(),
        name="api-student-renew",
    ),
    path(
        "classrooms/<int:pk>/students/<str:username>/thumbnail.png",
        classrooms.StudentThumbnail.as_view(),
        name="api-student-thumbnail",
    ),
    path("broadcasts/<int:pk>/", classrooms.BroadcastDetail.as_view(), name="api-broadcast"),
    path(
        "broadcasts/<int:pk>/students/<str:username>/retry/",
        classrooms.RetrySeat.as_view(),
        name="api-seat-retry",
    ),
    path("notices/", classrooms.Notices.as_view(), name="api-notices"),
    path("notices/<int:pk>/", classrooms.DismissNotice.as_view(), name="api-notice"),
    path("admin/images/", admin_catalog.CatalogList.as_view(), name="api-admin-images"),
    path("admin/images/engine/", admin_catalog.EngineImages.as_view(), name="api-admin-engine-images"),
    path("admin/images/build/", admin_catalog.CatalogBuild.as_view(), name="api-admin-build"),
    path("admin/images/pull/", admin_catalog.CatalogPull.as_view(), name="api-admin-pull"),
    path("admin/images/<int:pk>/", admin_catalog.CatalogDetail.as_view(), name="api-admin-image"),
    path("admin/audit/", classrooms.AuditLog.as_view(), name="api-admin-audit"),
    path(
        "admin/classrooms/<int:pk>/students/",
        classrooms.PlaceStudents.as_view(),
        name="api-admin-place-students",
    ),
    path("admin/reviews/", admin_catalog.ReviewList.as_view(), name="api-admin-reviews"),
    path("admin/reviews/<int:pk>/approve/", admin_catalog.ReviewApprove.as_view(), name="api-admin-approve"),
    path("admin/reviews/<int:pk>/reject/", admin_catalog.ReviewReject.as_view(), name="api-admin-reject"),
    path("saved-images/<int:pk>/publish/", admin_catalog.SubmitForPublishing.as_view(), name="api-publish"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
