"""Benchmarks: commands that print figures and write docs/benchmarks.md."""
