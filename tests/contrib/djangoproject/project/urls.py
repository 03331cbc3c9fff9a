"""One page: how many heartbeats the jobs recorded, so a test can see the server serve."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def heartbeats(request: HttpRequest) -> HttpResponse:
    from myapp.models import Heartbeat

    return HttpResponse(f"{Heartbeat.objects.count()} heartbeats\n",
                        content_type="text/plain")


urlpatterns = [path("", heartbeats)]
