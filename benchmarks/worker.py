"""Worker process: runs one system through one workload and writes the raw result.

``python -m benchmarks.worker SPEC_JSON OPTIONS_JSON OUT_PATH`` is what the runner starts,
once per run (three times at once for a ``cluster`` run), so that every system is measured
in a fresh interpreter: its CPU time and peak RSS are its own.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import NoReturn, Optional

from .adapters import Options, SkipRun, create
from .measure import Recorder
from .plan import RunSpec
from .workloads import run_workload

__all__ = ["main"]


def main(argv: Optional[list[str]] = None) -> int:
    spec_json, options_json, out_path = (sys.argv[1:] if argv is None else argv)
    spec = RunSpec.from_dict(json.loads(spec_json))
    recorder = Recorder(spec.work_ms)
    result: dict[str, object]
    try:
        adapter = create(spec.system, recorder.fire, Options(**json.loads(options_json)))
    except SkipRun as exc:
        result = {"skipped": str(exc)}
    else:
        try:
            result = run_workload(spec, adapter, recorder)
        except BaseException:
            traceback.print_exc()
            _exit(1)
        result["version"] = adapter.version
        result["settings"] = adapter.settings
    with open(out_path, "w") as out:
        json.dump(result, out)
    _exit(0)


def _exit(status: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    # Without waiting for the system's threads: handlers still queued, or a scheduler that
    # failed half-way, must not delay (or hang) the run; every figure is already written.
    os._exit(status)


if __name__ == "__main__":
    raise SystemExit(main())
