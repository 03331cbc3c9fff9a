"""The public API as users' type checkers see it (mypy --strict on code using it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_CODE = '''
from pyscheduler import RedisBackend, Scheduler

backend = RedisBackend.from_url("redis://localhost:6379/0", key_prefix="shop")
scheduler = Scheduler(backend)
address: int = backend.address  # wrong on purpose: mypy must know the type
'''


def test_redis_backend_is_typed_for_users(tmp_path: Path) -> None:
    # RedisBackend is imported lazily at run time (redis-py stays unimported until asked
    # for), but a type checker must see the class, not Any.
    source = tmp_path / "user_code.py"
    source.write_text(USER_CODE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        capture_output=True, text=True, timeout=120, check=False)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert "user_code.py:6" in errors[0] and "Incompatible types" in errors[0], result.stdout
