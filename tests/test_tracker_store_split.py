"""The tracker store split into records, protocol + memory store, and the SQLite store
keeps every name importable from ``runtime.tracker_store``, as the same objects."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

from otel_agentbus.runtime import tracker_records, tracker_sqlite, tracker_store

HOMES = {
    tracker_records: ("Decision", "DecisionType", "Option", "Outcome", "Problem", "Run",
                      "RunStatus", "RunSummary", "StoreClosedError"),
    tracker_sqlite: ("SCHEMA_VERSION", "SQLiteTrackerStore"),
    tracker_store: ("InMemoryTrackerStore", "TrackerStore"),
}


@pytest.mark.parametrize("home", list(HOMES), ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_old_names_still_come_from_tracker_store(home: ModuleType) -> None:
    old = importlib.import_module("otel_agentbus.runtime.tracker_store")
    for name in HOMES[home]:
        assert getattr(old, name) is getattr(home, name), name
        assert name in old.__all__, name


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    memory = tracker_store.InMemoryTrackerStore()
    with tracker_store.SQLiteTrackerStore(tmp_path / "t.db") as sqlite:
        assert isinstance(memory, tracker_store.TrackerStore)
        assert isinstance(sqlite, tracker_store.TrackerStore)
