"""The process's heap and its garbage collector: a long-running service's pauses, measured and kept short.

CPython's cyclic collector stops the process while it walks every tracked object of the generations it
collects. A service starts with a few hundred thousand long-lived objects (modules, classes, FastAPI's and
pydantic's schemas, SQLAlchemy's metadata), and each collection of the oldest generation walks all of them:
tens of milliseconds in which no request moves. ``settle()``, called once start-up is done, moves what exists
then into the permanent generation (``gc.freeze``), which collections never walk; ``watch()`` records every
pause into ``ticketing_gc_pause_seconds`` so that the effect is visible on /metrics.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from shared import metrics

_started = [0.0]  # when the collection under way began (collections never overlap)


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        metrics.GC_PAUSE.labels(generation=str(info["generation"])).observe(time.perf_counter() - _started[0])


def watch() -> None:
    """Record every collection's pause (idempotent)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


def settle(freeze: bool = True) -> None:
    """Collect what start-up left as garbage, freeze the survivors out of every later collection (unless
    ``freeze`` is false: ``TICKETING_GC_FREEZE``, to measure it), and record the pauses from now on."""
    if freeze:
        gc.collect()
        gc.freeze()
    watch()
