"""The benchmark suite: ``bash bench/run [--quick] [--json]`` (see docs/performance.md)."""
