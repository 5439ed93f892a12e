"""A progress line at least every 10 s while a stage runs, so a long export, check, calibration or verification
never looks hung: ``stage_heartbeat`` wraps each stage (:class:`pipeline.runner.StageRunner` does it) and a loop
inside reports how far it is with :func:`advance`.

    INFO check: 20 s, 1/2 model runs
    INFO export: 30 s

Only on a terminal: when stderr is a file or a pipe (CI, a log) a stage prints its one ``running`` line and its
result, nothing in between. No heavy imports: every stage module may report.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("pipeline")

#: Seconds between two progress lines.
INTERVAL_S = 10.0

_current: dict[str, str] = {}  # the running stage's last advance(), read by its heartbeat thread


def advance(done: int, total: int, unit: str) -> None:
    """What the running stage has done so far, e.g. ``advance(3, 8, "batches")``; shown in its next line."""
    _current["done"] = f"{done}/{total} {unit}"


def wants_progress() -> bool:
    """Progress lines go to a terminal only."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def stage_heartbeat(name: str, *, interval_s: float | None = None, enabled: bool | None = None) -> Iterator[None]:
    """While the block runs, log ``<name>: <elapsed> s[, <what advance() said>]`` every ``interval_s`` (default
    :data:`INTERVAL_S`) when ``enabled`` (default: stderr is a terminal)."""
    if not (wants_progress() if enabled is None else enabled):
        yield
        return
    interval = INTERVAL_S if interval_s is None else interval_s
    stop, start = threading.Event(), time.monotonic()
    _current.clear()

    def beat() -> None:
        while not stop.wait(interval):
            done = _current.get("done")
            log.info("%s: %.0f s%s", name, time.monotonic() - start, f", {done}" if done else "")

    thread = threading.Thread(target=beat, name=f"{name}-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        _current.clear()
