"""The example app; its models.py and jobs.py are in README.rst's Django section."""

from __future__ import annotations
