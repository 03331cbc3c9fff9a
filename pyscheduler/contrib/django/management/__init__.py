"""Django management commands of pyscheduler (``runscheduler``)."""

from __future__ import annotations

__all__: list[str] = []
