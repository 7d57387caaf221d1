"""Command-line tools around the library: CLI, audit, bench, demo, verify, compare."""
