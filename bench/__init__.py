"""The benchmark suite: ``bash bench/run [--quick] [--json]`` (see README, "Performance")."""
