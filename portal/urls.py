from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from workspaces import views

handler404 = "workspaces.api.errors.json_404"
handler500 = "workspaces.api.errors.json_500"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("student/", views.student_dashboard, name="student-dashboard"),
    path("teacher/", views.teacher_dashboard, name="teacher-dashboard"),
    path("manage/", views.admin_dashboard, name="admin-dashboard"),
    path("manage/images/<int:pk>/", views.admin_image, name="admin-image"),
    path("workspaces/<int:pk>/", views.viewer, name="viewer"),
    path("images/<int:pk>/", views.saved_image, name="saved-image"),
    path("classrooms/<int:pk>/", views.classroom_page, name="classroom"),
    path("classrooms/<int:pk>/students/<str:username>/", views.student_screen, name="student-screen"),
    path("classrooms/<int:pk>/demo/", views.demo_screen, name="demo-screen"),
    path("django-admin/", admin.site.urls),
    path("api/", include("workspaces.api.urls")),
]
