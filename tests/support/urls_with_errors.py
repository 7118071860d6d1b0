"""The portal's URLs plus an API view that fails, for the JSON 500 test."""

from django.urls import path
from rest_framework.views import APIView

from portal.urls import handler404, handler500  # noqa: F401
from portal.urls import urlpatterns as portal_urlpatterns


class Broken(APIView):
    def get(self, request):
        raise RuntimeError("a bug")


urlpatterns = [path("api/broken/", Broken.as_view()), *portal_urlpatterns]
