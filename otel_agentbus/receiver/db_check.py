"""Checks on a ``--db`` path before anything touches it.

The receiver's store creates missing directories and adds its tables to whatever SQLite
file it is given; a typo or a wrong file would then be silently "fixed". These checks run
first and name the path and what is wrong with it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

RECEIVER_TABLES: Final = frozenset({"spans", "metrics", "logs"})
_SQLITE_HEADER: Final = b"SQLite format 3\x00"


class DatabasePathError(ValueError):
    """A ``--db`` path the receiver must not read or write."""


def _existing_file_problem(path: Path) -> str | None:
    """Why an existing ``path`` is not a receiver database (``None``: it is one, or empty)."""
    if path.is_dir():
        return f"{path} is a directory, not a database file"
    if not path.is_file():
        return f"{path} is not a regular file"
    try:
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if not header:
        return None  # an empty file (e.g. from mkstemp) becomes a fresh database
    if header != _SQLITE_HEADER:
        return f"{path} is not a SQLite database (it holds other data)"
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10.0)
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"cannot read {path} as SQLite: {exc}"
    if tables and not RECEIVER_TABLES.issubset(tables):
        names = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        return (f"{path} is a SQLite database of something else (tables: {names}); "
                "refusing to write the receiver's tables into it")
    return None


def check_writable(db: str | os.PathLike[str]) -> Path:
    """The absolute path, once it is a new file in an existing directory, an empty file
    or a receiver database; else :class:`DatabasePathError`."""
    path = Path(db).absolute()
    if path.exists():
        problem = _existing_file_problem(path)
    elif not path.parent.is_dir():
        problem = (f"cannot create {path}: directory {path.parent} does not exist "
                   "(create it first)")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        problem = f"cannot create {path}: directory {path.parent} is not writable"
    else:
        problem = None
    if problem is not None:
        raise DatabasePathError(problem)
    return path
