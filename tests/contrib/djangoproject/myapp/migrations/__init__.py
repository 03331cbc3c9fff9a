"""Made by ``manage.py makemigrations myapp`` when a test builds the project."""

from __future__ import annotations
