"""shared/heap.py: start-up's objects leave the collector's walks, and every pause is on /metrics."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from shared import heap


@pytest.fixture
def settled() -> Iterator[None]:
    heap.settle()
    yield
    gc.unfreeze()  # this test process is not a service: give the collector its objects back
    gc.callbacks.remove(heap._on_collection)


def _pauses(generation: str) -> float:
    return REGISTRY.get_sample_value("ticketing_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_settle_freezes_what_exists_and_records_each_collection(settled: None) -> None:
    assert gc.get_freeze_count() > 1000  # the modules, classes and functions imported so far
    before = _pauses("2")
    gc.collect()
    assert _pauses("2") == before + 1


def test_settle_twice_records_a_collection_once(settled: None) -> None:
    heap.settle()
    before = _pauses("0")
    gc.collect(0)
    assert _pauses("0") == before + 1
