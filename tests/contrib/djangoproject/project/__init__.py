"""The example Django project of README.rst's Django section (its settings.py is there)."""

from __future__ import annotations
