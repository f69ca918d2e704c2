"""Helpers shared by the tests (and the benchmarks that drive the real components).

Each helper lives here once; test modules import from `tests.support`, never from each other.
"""
