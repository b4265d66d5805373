"""Hive's ``SharedStateManager``: state every execution of a ``shared`` entry point sees.

It is the very dict the project's runtime hands to those executions as ``ctx.shared``,
so what a node writes there is visible here, and what is set here is visible to nodes.
With a ``path`` it is loaded from that JSON file when made and written back by
:meth:`save` (the runtime saves after every execution and on ``stop``), so the state
survives a restart. The seed itself only calls ``get_stats()``; ``get``/``set``/
``delete``/``snapshot``/``save`` are ours.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from .storage import read_json, write_json


class SharedStateManager:
    def __init__(self, state: dict[str, Any] | None = None, path: str | Path | None = None,
                 ) -> None:
        self._state: dict[str, Any] = state if state is not None else {}
        self.path = Path(path) if path is not None else None
        self.writes = 0
        self.saves = 0
        self._lock = threading.Lock()
        if self.path is not None:
            loaded = read_json(self.path)
            if isinstance(loaded, dict):
                for key, value in loaded.items():
                    self._state.setdefault(key, value)

    @property
    def state(self) -> dict[str, Any]:
        """The live dict (``ctx.shared`` of shared entry points)."""
        return self._state

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._state[key] = value
        self.writes += 1

    def delete(self, key: str) -> bool:
        return self._state.pop(key, _MISSING) is not _MISSING

    def snapshot(self) -> dict[str, Any]:
        return dict(self._state)

    async def save(self) -> None:
        """Write the state to ``path`` (nothing without one)."""
        if self.path is None:
            return
        snapshot = dict(self._state)
        path = self.path

        def write() -> None:
            with self._lock:  # two saves never interleave their renames
                write_json(path, snapshot)

        await asyncio.to_thread(write)
        self.saves += 1

    def get_stats(self) -> dict[str, Any]:
        return {"keys": len(self._state), "writes": self.writes, "saves": self.saves,
                "persistent": self.path is not None}


_MISSING: Any = object()
