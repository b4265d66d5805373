"""``python -m bench``: run the suite (``bash bench/run`` installs the peers first)."""

from .suite import main

raise SystemExit(main())
