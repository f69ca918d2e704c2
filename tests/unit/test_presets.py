"""Presets: a 0 that stands for an absent counter is only given while Stalwart is scraped."""

from __future__ import annotations

import re

import pytest

from autoscaler.config import load_config_data
from autoscaler.presets import PRESET_NAMES

GATE = re.compile(r"\) and on\(\) count\((\w*)smtp_active_connections\)$")


def preset_queries(preset: str, prefix: str, edition: str) -> list[str]:
    target = load_config_data({"targets": [{
        "name": "t", "backend": "swarm", "service": "stalwart", "max_replicas": 10,
        "preset": preset, "prefix": prefix, "preset_options": {"edition": edition}}]},
        environ={}).targets[0]
    return ([p.query for p in target.effective_policies()]
            + [g.query for g in target.effective_guards()])


@pytest.mark.parametrize("edition", ["community", "enterprise"])
@pytest.mark.parametrize("prefix", ["", "stalwart_"])
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_zero_for_an_absent_series_is_gated_on_a_scraped_node(
        preset: str, prefix: str, edition: str) -> None:
    """`or vector(0)` alone would read an unscraped cluster as idle and scale it to min."""
    for query in preset_queries(preset, prefix, edition):
        if "vector(0)" not in query:
            continue
        gate = GATE.search(query)
        assert gate is not None, query
        assert gate.group(1) == prefix, query


@pytest.mark.parametrize(
    ("preset", "gated"),
    [
        pytest.param("stalwart-smtp", {"inflow", "active_deliveries"}, id="smtp"),
        pytest.param("stalwart-all", {"inflow", "active_deliveries"}, id="all"),
        pytest.param("stalwart-imap", set(), id="imap"),  # no counter, no 0 to give
        pytest.param("stalwart-http", set(), id="http"),
    ],
)
def test_which_signals_are_gated(preset: str, gated: set[str]) -> None:
    target = load_config_data({"targets": [{
        "name": "t", "backend": "swarm", "service": "stalwart", "max_replicas": 10,
        "preset": preset}]}, environ={}).targets[0]
    labelled = [(p.label, p.query) for p in target.effective_policies()]
    labelled += [(g.label, g.query) for g in target.effective_guards()]
    assert {label for label, query in labelled if GATE.search(query)} == gated
