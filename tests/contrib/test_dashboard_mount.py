"""The dashboard mounted in a Flask application and in a Django project.

Flask: the README's way, ``DispatcherMiddleware`` over ``app.wsgi_app``, through Flask's test
client on the memory backend. Django: the README's ``urls.py`` in a project of its own, run
in a separate Python process (Django's settings are process-global) with Django's test
client, over a real redis-server whose group a scheduler in this process registered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyscheduler import Control, FakeClock, IntervalSchedule, Job, MemoryBackend, RedisBackend
from pyscheduler.contrib.dashboard import Dashboard
from tests.readme_samples import write_sample_files

from ..helpers import START, Schedulers

ROOT = Path(__file__).resolve().parents[2]
BOUND = 120.0  # seconds: a Django process that migrates and serves a few requests


# -- Flask --------------------------------------------------------------------------------------


def test_in_flask_under_dispatcher_middleware_the_dashboard_serves_its_prefix(schedulers):
    flask = pytest.importorskip("flask")
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    # Given a Flask app with a route of its own and the dashboard at /ops/scheduler
    clock = FakeClock(START)
    backend = MemoryBackend(clock)
    scheduler = schedulers.stepped(clock, backend)
    scheduler.register(Job("report", IntervalSchedule(3600), lambda: None))
    scheduler.start(background=False)
    app = flask.Flask("shop")
    app.add_url_rule("/", "index", lambda: "the shop")
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app,  # type: ignore[method-assign]
                                        {"/ops/scheduler": Dashboard(Control(backend))})
    client = app.test_client()

    # Then both answer, and the dashboard's links and redirects stay under its prefix
    assert client.get("/").text == "the shop"
    page = client.get("/ops/scheduler/").text
    assert '<tr data-job="report">' in page
    assert 'href="/ops/scheduler/job?name=report"' in page
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    response = client.post("/ops/scheduler/pause", data={"csrf": token, "name": "report"})
    assert response.status_code == 303 and response.headers["Location"] == "/ops/scheduler/"
    assert Control(backend).job("report").paused
    assert client.get("/ops/scheduler/job?name=nope").status_code == 404


# -- Django -------------------------------------------------------------------------------------

SETTINGS = """\
import os
SECRET_KEY = "test-only"
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
              "django.middleware.csrf.CsrfViewMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware"]
PYSCHEDULER = {"REDIS_URL": os.environ["REDIS_URL"], "KEY_PREFIX": "shop"}
"""

# Django's test client, with Django's own CSRF checks enforced: the dashboard's view is exempt
# from them and checks its own token.
VISITS = """\
import json, re
import django
django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from urllib.parse import urlencode

def post(client, path, fields):  # as a browser posts a form
    return client.post(path, urlencode(fields), content_type="application/x-www-form-urlencoded")

call_command("migrate", verbosity=0)
seen = {}
anonymous = Client(enforce_csrf_checks=True)
response = anonymous.get("/ops/scheduler/")
seen["anonymous"] = [response.status_code, response.get("Location")]
response = post(anonymous, "/ops/scheduler/pause", {"name": "report"})
seen["anonymous_post"] = [response.status_code, response.get("Location")]

member = Client(enforce_csrf_checks=True)
member.force_login(User.objects.create_user("member", password="x"))
seen["member"] = member.get("/ops/scheduler/").status_code

staff = Client(enforce_csrf_checks=True)
staff.force_login(User.objects.create_user("staff", password="x", is_staff=True))
response = staff.get("/ops/scheduler/")
page = response.content.decode()
seen["staff"] = [response.status_code, re.findall(r'(?:href|action)="(?!data:)([^"]+)"', page)]
token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
seen["no_token"] = post(staff, "/ops/scheduler/pause", {"name": "report"}).status_code
response = post(staff, "/ops/scheduler/pause", {"name": "report", "csrf": token})
seen["pause"] = [response.status_code, response.get("Location")]
seen["job"] = staff.get("/ops/scheduler/job", {"name": "report"}).status_code
seen["unknown"] = staff.get("/ops/scheduler/job", {"name": "nope"}).status_code
response = anonymous.get("/open/")
seen["open"] = [response.status_code, "<form" in response.content.decode()]
seen["open_post"] = post(anonymous, "/open/pause", {"name": "report"}).status_code
print(json.dumps(seen))
"""


@pytest.mark.redis
def test_in_django_the_readme_urls_serve_the_dashboard_to_staff_only(redis_server, tmp_path,
                                                                    schedulers: Schedulers):
    pytest.importorskip("django")
    # Given a group "shop" with a job, and the README's urls.py in a project of its own
    scheduler = schedulers.stepped(FakeClock(START),
                                   RedisBackend.from_url(redis_server.url, key_prefix="shop"))
    scheduler.register(Job("report", IntervalSchedule(3600), lambda: None))
    scheduler.start(background=False)
    (urls,) = write_sample_files(tmp_path, prefix="djangodashboard/")
    project = urls.parent.parent
    (project / "project" / "__init__.py").write_text("", encoding="utf-8")
    (project / "project" / "settings.py").write_text(SETTINGS, encoding="utf-8")
    with urls.open("a", encoding="utf-8") as more:  # and one open to all, read-only
        more.write('urlpatterns.append(path("open/", include(dashboard_urls(\n'
                   '    control, permission=None, read_only=True))))\n')

    # When visitors ask for the dashboard there
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings",
           "REDIS_URL": redis_server.url,
           "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", VISITS], cwd=project, env=env,
                            capture_output=True, text=True, timeout=BOUND, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])

    # Then anonymous visitors are sent to log in, other users refused, staff served
    assert seen["anonymous"] == [302, "/accounts/login/?next=/ops/scheduler/"]
    assert seen["anonymous_post"][0] == 302
    assert seen["member"] == 403
    status, links = seen["staff"]
    assert status == 200 and links
    assert all(link.startswith("/ops/scheduler/") for link in links), links
    # and the buttons work under the prefix, with the dashboard's own CSRF token
    assert seen["no_token"] == 403
    assert seen["pause"] == [303, "/ops/scheduler/"]
    assert (seen["job"], seen["unknown"]) == (200, 404)
    # and permission=None serves anyone (here read-only: no buttons, POSTs refused)
    assert seen["open"] == [200, False] and seen["open_post"] == 403
    with Control.from_url(redis_server.url, key_prefix="shop") as control:
        assert control.job("report").paused
