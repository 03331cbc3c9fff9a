"""pyscheduler's benchmark suite: pyscheduler against APScheduler 3.x and ``schedule``.

Not part of the test run. ``python -m benchmarks --quick`` runs it; see ``README.rst`` here.
The runner (:mod:`.run`) starts one worker process (:mod:`.worker`) per measurement, which
drives one adapter (:mod:`.adapters`) through one workload (:mod:`.workloads`);
:mod:`.measure` turns the recorded handler starts into executed, duplicates and lateness.
"""

from __future__ import annotations
