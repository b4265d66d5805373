"""What Hive's ``AgentRuntime`` keeps under ``storage_path`` (seed 001), as plain JSON files.

- :class:`ConcurrentStorage`: finished runs of the decision trackers,
  ``runs/<run_id>.json`` (the seed's ``save_run``);
- :class:`SessionStore`: one session per execution, ``sessions/<execution_id>/state.json``:
  entry point, status, input, memory (the execution's state), result; a restarted runtime
  resumes one with ``trigger(..., session_state=session["session_state"])``;
- :class:`RuntimeLogStore`: one summary per execution, ``runtime_logs/<execution_id>.json``.

Files are written whole to a temporary name and renamed (a crash never leaves half a
file), readable by the owner only, from a worker thread so the event loop never waits
on the disk. Values that are not JSON are stored as their ``repr``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any, Final

from ...runs import json_safe

_SAFE_NAME: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _checked_name(name: str, what: str) -> str:
    """An id used as a file name: no path separators, no traversal."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"{what} {name!r} cannot name a file: use letters, digits and "
                         "_ . : - only (at most 200)")
    return name


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` atomically, owner-readable only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(value), default=repr, sort_keys=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when the file does not exist."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


class ConcurrentStorage:
    """Runs saved by the trackers (Hive's ``ConcurrentStorage``; ``cache_ttl`` and
    ``batch_interval`` are accepted for the seed's call and unused: every save is written
    at once)."""

    def __init__(self, base_path: str | Path, cache_ttl: float = 60.0,
                 batch_interval: float = 0.1) -> None:
        self.base_path = Path(base_path)
        self.cache_ttl = cache_ttl
        self.batch_interval = batch_interval
        self.saved = 0

    async def start(self) -> None:
        await asyncio.to_thread((self.base_path / "runs").mkdir, parents=True, exist_ok=True)

    async def stop(self) -> None:
        """Nothing is buffered: every save was written when it returned."""

    async def save_run(self, run: Any) -> None:
        """Write ``run`` (anything with ``id``; ``to_dict()`` is used when it has one)."""
        run_id = _checked_name(str(run.id), "run id")
        data = run.to_dict() if callable(getattr(run, "to_dict", None)) else vars(run)
        await asyncio.to_thread(write_json, self.base_path / "runs" / f"{run_id}.json", data)
        self.saved += 1

    async def load_run(self, run_id: str) -> dict[str, Any] | None:
        """A saved run as its dict, or None."""
        path = self.base_path / "runs" / f"{_checked_name(run_id, 'run id')}.json"
        loaded = await asyncio.to_thread(read_json, path)
        return loaded if isinstance(loaded, dict) else None

    async def list_runs(self) -> list[str]:
        """Ids of the saved runs, oldest first."""
        def scan() -> list[str]:
            folder = self.base_path / "runs"
            if not folder.is_dir():
                return []
            files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
            return [p.stem for p in files]
        return await asyncio.to_thread(scan)


class SessionStore:
    """One session per execution (Hive's ``SessionStore``), keyed by the execution id."""

    def __init__(self, base_path: str | Path) -> None:
        self.base_path = Path(base_path)

    def _path(self, session_id: str) -> Path:
        return self.base_path / "sessions" / _checked_name(session_id, "session id") \
            / "state.json"

    async def write_state(self, session_id: str, state: dict[str, Any]) -> None:
        await asyncio.to_thread(write_json, self._path(session_id), state)

    async def read_state(self, session_id: str) -> dict[str, Any] | None:
        loaded = await asyncio.to_thread(read_json, self._path(session_id))
        return loaded if isinstance(loaded, dict) else None

    async def list_sessions(self, status: str | None = None,
                            limit: int = 100) -> list[dict[str, Any]]:
        """Sessions, newest first (optionally only those with ``status``)."""
        def scan() -> list[dict[str, Any]]:
            folder = self.base_path / "sessions"
            if not folder.is_dir():
                return []
            found: list[dict[str, Any]] = []
            for path in folder.glob("*/state.json"):
                state = read_json(path)
                if isinstance(state, dict) and (status is None or state.get("status") == status):
                    found.append(state)
            found.sort(key=lambda s: float(s.get("updated_at") or 0.0), reverse=True)
            return found[:limit]
        return await asyncio.to_thread(scan)


class RuntimeLogStore:
    """Per-execution summaries (what ``create_agent_runtime(enable_logging=True)`` makes)."""

    def __init__(self, base_path: str | Path) -> None:
        self.base_path = Path(base_path)

    async def save_summary(self, execution_id: str, summary: dict[str, Any]) -> None:
        path = self.base_path / f"{_checked_name(execution_id, 'execution id')}.json"
        await asyncio.to_thread(write_json, path, summary)

    async def load_summary(self, execution_id: str) -> dict[str, Any] | None:
        path = self.base_path / f"{_checked_name(execution_id, 'execution id')}.json"
        loaded = await asyncio.to_thread(read_json, path)
        return loaded if isinstance(loaded, dict) else None
