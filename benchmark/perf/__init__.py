"""Performance checks of harness components (wired to the CLI as `bench perf ...`)."""
