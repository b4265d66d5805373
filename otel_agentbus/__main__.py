"""``python -m otel_agentbus``: the CLI without the console script on ``PATH``."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
