"""The docs' names table, rendered from ``semconv.py`` so the two cannot disagree.

``python -m otel_agentbus.semconv_table`` prints the table; ``--write`` replaces the
generated block (between the two marker comments) of the names reference page,
``docs/names.md``, and ``--check`` exits 1 when that block differs from what ``semconv.py``
says. Either takes another markdown file instead.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from . import semconv

DEFAULT_TARGET: Final = Path("docs/names.md")
"""The page holding the generated table, relative to the repository root."""
COMMAND: Final = "python -m otel_agentbus.semconv_table --write"
BEGIN_MARKER: Final = (
    f"<!-- names table: generated from otel_agentbus/semconv.py by `{COMMAND}` -->")
END_MARKER: Final = "<!-- end of the generated names table -->"


class MarkersError(ValueError):
    """The document has no generated block to check or replace."""


def _row(group: semconv.NameGroup) -> str:
    names = ", ".join(f"`{name}`" for name in group.names)
    owners = dict.fromkeys(semconv.convention_of(name) for name in group.names)
    return f"| {names} | {group.kind} | {group.where} | {', '.join(owners)} |"


def render_names_table(groups: Sequence[semconv.NameGroup] = semconv.NAME_TABLE) -> str:
    """The generated block's content: a sentence on versions and owners, then the table."""
    intro = (
        f"Schema {semconv.SCHEMA_VERSION} (the instrumentation scope version of "
        f"`{semconv.INSTRUMENTATION_SCOPE}`). GenAI names follow "
        f"{semconv.GENAI_CONVENTIONS}; `error.type` is OpenTelemetry's general convention; "
        "`agentbus.*` names are the project's own (no convention covers graph nodes, "
        "iterations or decisions).")
    lines = [
        *textwrap.wrap(intro, width=90, break_on_hyphens=False),
        "",
        "| name | kind | where | defined by |",
        "| --- | --- | --- | --- |",
        *(_row(group) for group in groups),
    ]
    # The blank line ends the table before the end marker in every markdown renderer.
    return "\n".join(lines) + "\n\n"


def _block_bounds(document: str) -> tuple[int, int]:
    """Start and end offsets of the generated content between the markers."""
    begin = document.find(BEGIN_MARKER)
    end = document.find(END_MARKER)
    if begin < 0 or end < 0 or end < begin:
        raise MarkersError(
            f"no generated names table: expected a line {BEGIN_MARKER!r} followed later by "
            f"a line {END_MARKER!r}")
    return begin + len(BEGIN_MARKER) + 1, end


def generated_block(document: str) -> str:
    """The content of ``document``'s generated block as it stands."""
    start, end = _block_bounds(document)
    return document[start:end]


def with_names_table(document: str) -> str:
    """``document`` with its generated block replaced by a fresh rendering."""
    start, end = _block_bounds(document)
    return document[:start] + render_names_table() + document[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m otel_agentbus.semconv_table",
        description="Print the names table generated from semconv.py, or check or rewrite "
                    "the generated block of a markdown file.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="FILE", type=Path, nargs="?", const=DEFAULT_TARGET,
                      help="exit 1 when FILE's generated block differs from semconv.py "
                           f"(default: {DEFAULT_TARGET})")
    mode.add_argument("--write", metavar="FILE", type=Path, nargs="?", const=DEFAULT_TARGET,
                      help=f"replace FILE's generated block with a fresh rendering "
                           f"(default: {DEFAULT_TARGET})")
    args = parser.parse_args(argv)
    if args.check is None and args.write is None:
        sys.stdout.write(render_names_table())
        return 0
    path: Path = args.check if args.check is not None else args.write
    try:
        document = path.read_text(encoding="utf-8")
        fresh = with_names_table(document)
    except (OSError, MarkersError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    if args.write is not None:
        if fresh != document:
            path.write_text(fresh, encoding="utf-8")
        return 0
    if fresh != document:
        print(f"{path}: the names table is out of date with otel_agentbus/semconv.py; "
              f"run `{COMMAND}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
