"""Integrations, each an optional extra: ``pyscheduler.contrib.flask``
(``pip install pyscheduler[flask]``), ``pyscheduler.contrib.django``
(``pip install pyscheduler[django]``) and the Prometheus exporters
``pyscheduler.contrib.prometheus`` (``pip install pyscheduler[prometheus]``). Nothing here is
imported by ``import pyscheduler``."""

from __future__ import annotations

__all__: list[str] = []
