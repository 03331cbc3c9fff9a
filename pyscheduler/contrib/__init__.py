"""Integrations with frameworks, each an optional extra: ``pyscheduler.contrib.flask``
(``pip install pyscheduler[flask]``) and ``pyscheduler.contrib.django``
(``pip install pyscheduler[django]``). Nothing here is imported by ``import pyscheduler``."""

from __future__ import annotations

__all__: list[str] = []
