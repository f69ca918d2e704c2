"""The JSON Schema and `check-config` agree: one table per finding of issue #14, each case
checked on both sides (the validator through the loader, the schema through jsonschema).

Every case starts from the minimal valid document; `None` in the schema column means JSON
cannot carry the value (NaN, ±Inf), so only the validator is asked.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from autoscaler.cli import main
from autoscaler.config import ConfigError, config_schema, load_config_data
from autoscaler.presets import PresetOptions
from tests.support.configs import minimal

NO_ENV: dict[str, str] = {}
SCHEMA = config_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def target(**keys: Any) -> dict[str, Any]:
    """The minimal document with `keys` set on its target (None removes a key)."""
    data = minimal()
    data["targets"][0].update(keys)
    data["targets"][0] = {k: v for k, v in data["targets"][0].items() if v is not None}
    return data


def validator_says(data: dict[str, Any]) -> tuple[bool, list[str]]:
    """(accepted, the keys of the problems), from the loader."""
    try:
        load_config_data(data, environ=NO_ENV)
    except ConfigError as exc:
        return False, [issue.key for issue in exc.issues]
    return True, []


def schema_says(data: dict[str, Any]) -> bool:
    return bool(VALIDATOR.is_valid(data))


# (id, document, accepted?, the key the refusal names)
CASES: list[tuple[str, dict[str, Any], bool, str]] = [
    # 1. a huge integer in a duration was an OverflowError
    ("duration-huge-int", minimal(evaluation_interval=10**400), False, "evaluation_interval"),
    ("duration-huge-negative", minimal(evaluation_interval=-(10**400)), False,
     "evaluation_interval"),
    ("cooldown-huge-int", target(cooldown={"up": 10**400}), False, "targets[0].cooldown.up"),
    ("duration-max", minimal(evaluation_interval=10**9), True, ""),
    ("duration-over-max", minimal(evaluation_interval=10**9 + 1), False, "evaluation_interval"),
    # 2. a NUL in a secret file path was a ValueError from stat()
    ("nul-bearer-token-file", minimal(prometheus={"bearer_token_file": "a\x00b"}), False,
     "prometheus.bearer_token_file"),
    ("nul-password-file", minimal(prometheus={"basic_auth": {"username": "u",
                                                             "password_file": "a\x00b"}}),
     False, "prometheus.basic_auth.password_file"),
    ("nul-in-query", target(guards=[{"query": "up\x00", "above": 1}]), False,
     "targets[0].guards[0].query"),
    ("empty-path", minimal(prometheus={"ca_file": ""}), False, "prometheus.ca_file"),
    # 4. strict integers and booleans on targets, as in the behavior block
    ("max-replicas-yaml-true", target(max_replicas=True), False, "targets[0].max_replicas"),
    ("max-replicas-text", target(max_replicas="5"), False, "targets[0].max_replicas"),
    ("min-replicas-float", target(min_replicas=1.5), False, "targets[0].min_replicas"),
    ("dry-run-text", target(dry_run="yes"), False, "targets[0].dry_run"),
    ("guard-bound-text", target(guards=[{"query": "q", "above": "3"}]), False,
     "targets[0].guards[0].above"),
    ("policy-step-true", target(policies=[{"type": "threshold", "query": "q",
                                           "scale_up_above": 1, "step": True}]),
     False, "targets[0].policies[0].step"),
    # 5. the schema as strict as the validator
    ("listen-any-string", minimal(listen="anything"), False, "listen"),
    ("listen-port-0", minimal(listen="127.0.0.1:0"), False, "listen"),
    ("listen-port-65536", minimal(listen="127.0.0.1:65536"), False, "listen"),
    ("listen-ipv6", minimal(listen="[::1]:9464"), True, ""),
    ("duration-double-dot", minimal(evaluation_interval="1..5s"), False, "evaluation_interval"),
    ("duration-two-dots", minimal(evaluation_interval="1.2.3s"), False, "evaluation_interval"),
    ("duration-units-out-of-order", minimal(evaluation_interval="30s5m"), False,
     "evaluation_interval"),
    ("duration-ok", minimal(evaluation_interval="1h30m15.5s"), True, ""),
    ("duration-1ns-above-0", minimal(evaluation_interval="1ns"), True, ""),
    ("url-short-host", minimal(prometheus={"url": "http://db"}), True, ""),
    ("url-with-path", minimal(prometheus={"url": "https://u:p@prom.example:9090/x/"}), True, ""),
    ("url-not-http", minimal(prometheus={"url": "ftp://db"}), False, "prometheus.url"),
    ("url-no-host", minimal(prometheus={"url": "http://"}), False, "prometheus.url"),
    ("url-with-space", minimal(prometheus={"url": "http://d b"}), False, "prometheus.url"),
    ("url-with-query", minimal(prometheus={"url": "http://db/?x=1"}), False, "prometheus.url"),
    ("evaluation-interval-0", minimal(evaluation_interval=0), False, "evaluation_interval"),
    ("evaluation-interval-0s", minimal(evaluation_interval="0s"), False, "evaluation_interval"),
    ("timeout-0", minimal(prometheus={"timeout": "0ms"}), False, "prometheus.timeout"),
    ("simulation-scrape-0", minimal(simulation={"scrape_interval": 0}), False,
     "simulation.scrape_interval"),
    ("drain-within-0", target(preset_options={"drain_within": "0s"}), False,
     "targets[0].preset_options.drain_within"),
    ("forecast-window-0", target(policies=[{"type": "forecast", "query": "q", "window": 0}]),
     False, "targets[0].policies[0].window"),
    ("header-name-with-space", minimal(prometheus={"headers": {"X Y": "v"}}), False,
     "prometheus.headers.X Y"),
    ("header-value-newline", minimal(prometheus={"headers": {"X-Y": "a\nb"}}), False,
     "prometheus.headers.X-Y"),
    ("tolerance-1e400", target(behavior={"scaleUp": {"tolerance": "1e400"}}), False,
     "targets[0].behavior.scaleUp.tolerance"),
    ("tolerance-huge-int", target(behavior={"scaleUp": {"tolerance": 10**400}}), False,
     "targets[0].behavior.scaleUp.tolerance"),
    ("hpa-pods-over-int32", target(behavior={"scaleUp": {"policies": [
        {"type": "Pods", "value": 2**31, "periodSeconds": 15}]}}), False,
     "targets[0].behavior.scaleUp.policies[0].value"),
    ("float-over-float-range", target(guards=[{"query": "q", "above": 10**400}]), False,
     "targets[0].guards[0].above"),
    ("seasonal-history-0", target(policies=[{"type": "seasonal", "query": "q",
                                             "history": "0s"}]), False,
     "targets[0].policies[0].history"),
    # NUL where a key's own pattern would have let one through (the loader refuses it)
    ("selector-nul-in-value", target(preset_options={"selector": 'a="b\x00"'}), False,
     "targets[0].preset_options.selector"),
    ("queue-api-user-nul", target(preset_options={"queue_api": {
        "url": "http://stalwart:8080", "password_file": "/p", "user": "a\x00"}}), False,
     "targets[0].preset_options.queue_api.user"),
    ("queue-api-url-nul", target(preset_options={"queue_api": {
        "url": "http://st\x00alwart", "password_file": "/p"}}), False,
     "targets[0].preset_options.queue_api.url"),
    ("selector-trailing-commas", target(preset_options={"selector": ' ,a="b",'}), True, ""),
    # 6. a policy's `type` is required on both sides
    ("policy-without-type", target(policies=[{"query": "q", "scale_up_above": 1}]), False,
     "targets[0].policies[0]"),
]


@pytest.mark.parametrize(("data", "accepted", "key"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_validator_and_schema_agree(data: dict[str, Any], accepted: bool, key: str) -> None:
    ok, keys = validator_says(data)
    assert ok is accepted, keys
    if not accepted:
        assert key in keys, keys
    assert schema_says(data) is accepted, "the schema disagrees with check-config"


NON_FINITE = [
    ("guard-above-nan", target(guards=[{"query": "q", "above": math.nan}]),
     "targets[0].guards[0].above"),
    ("headroom-inf", target(preset_options={"headroom": math.inf}),
     "targets[0].preset_options.headroom"),
    ("threshold-minus-inf", target(policies=[{"type": "threshold", "query": "q",
                                              "scale_up_above": -math.inf}]),
     "targets[0].policies[0].scale_up_above"),
    ("capacity-per-instance-nan", target(policies=[{"type": "capacity", "query": "q",
                                                    "per_instance": math.nan}]),
     "targets[0].policies[0].per_instance"),
    ("simulation-capacity-inf", minimal(simulation={"capacity_per_instance": math.inf}),
     "simulation.capacity_per_instance"),
]


@pytest.mark.parametrize(("data", "key"), [c[1:] for c in NON_FINITE],
                         ids=[c[0] for c in NON_FINITE])
def test_nan_and_infinity_are_refused(data: dict[str, Any], key: str) -> None:
    """3. NaN bounds never trip and JSON cannot carry them: refused at load."""
    ok, keys = validator_says(data)
    assert not ok and key in keys, keys


def check_config(path: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check-config", *args, str(path)])
    return code, out.getvalue(), err.getvalue()


def test_check_config_json_is_json_and_valid_against_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(target(guards=[{"query": "q", "above": 0.5}])))
    code, out, err = check_config(path, "--json")
    assert code == 0, err
    VALIDATOR.validate(json.loads(out))


def test_a_duration_too_long_for_hours_prints_as_seconds_without_a_warning(
        tmp_path: Path) -> None:
    """More hours than the grammar's digits allow: printed as whole seconds, and pydantic does
    not warn that the serializer returned an int (found by the schema property test)."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal(simulation={"scrape_interval": 999_999_999})))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = check_config(path, "--json")
    assert code == 0, err
    assert json.loads(out)["simulation"]["scrape_interval"] == 999_999_999


def test_check_config_names_nan_instead_of_printing_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal()) + "  guards: [{query: q, above: .nan}]\n")
    code, out, err = check_config(path, "--json")
    assert (code, out) == (2, ""), out
    assert "targets[0].guards[0].above" in err


# 7. single-key rules live on the field: no cross-field rule reports them any more
@pytest.mark.parametrize(("data", "key"), [
    (minimal(evaluation_interval=0), "evaluation_interval"),
    (minimal(prometheus={"timeout": 0}), "prometheus.timeout"),
    (minimal(simulation={"scrape_interval": 0}), "simulation.scrape_interval"),
    (minimal(listen="nope"), "listen"),
    (minimal(prometheus={"url": "http:/x"}), "prometheus.url"),
], ids=["evaluation-interval", "timeout", "scrape-interval", "listen", "url"])
def test_single_key_rules_are_not_cross_field(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data(data, environ=NO_ENV)
    (issue,) = [i for i in info.value.issues if i.key == key]
    assert issue.rule is None, issue


def test_a_cross_field_refusal_names_its_rule() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data(target(min_replicas=9, max_replicas=3), environ=NO_ENV)
    (issue,) = info.value.issues
    assert issue.rule == "replica_bounds"
    assert str(issue).endswith("[cross-field rule replica_bounds]")


@pytest.mark.parametrize(("variable", "value", "key", "expected"), [
    ("AUTOSCALER_PROMETHEUS__MAX_CONCURRENT_QUERIES", "4", "max_concurrent_queries", 4),
    ("AUTOSCALER_PROMETHEUS__VERIFY_TLS", "false", "verify_tls", False),
    ("AUTOSCALER_PROMETHEUS__TIMEOUT", "10s", "timeout", 10.0),
    ("AUTOSCALER_PROMETHEUS__URL", "http://10", "url", "http://10"),
])
def test_environment_text_becomes_the_type_the_key_wants(variable: str, value: str, key: str,
                                                         expected: object) -> None:
    """Strict numbers in files; environment variables are text and still work."""
    settings = load_config_data(minimal(), environ={variable: value})
    assert getattr(settings.prometheus, key) == expected


def test_environment_text_that_is_no_number_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data(minimal(), environ={"AUTOSCALER_PROMETHEUS__MAX_CONCURRENT_QUERIES":
                                             "many"})
    (issue,) = info.value.issues
    assert issue.source == "environment AUTOSCALER_PROMETHEUS__MAX_CONCURRENT_QUERIES"


def test_policy_type_is_required_in_the_schema() -> None:
    defs = SCHEMA["$defs"]
    for name in ("ThresholdPolicy", "QueueTrendPolicy", "CapacityPolicy", "TargetValuePolicy",
                 "ForecastPolicy"):
        assert "type" in defs[name]["required"], name


JSON_SCHEMA_WORDS = {
    "$schema", "$defs", "$ref", "title", "description", "default", "type", "anyOf", "oneOf",
    "not", "discriminator", "properties", "required", "additionalProperties",
    "patternProperties", "items", "minItems", "maxItems", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "pattern", "minLength", "maxLength", "enum",
    "const", "format", "uniqueItems", "propertyName", "mapping"}


def _keywords(node: Any, names: bool = False) -> set[str]:
    """Every keyword used in a schema (the names under properties, $defs... are not)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if not names:
                found.add(key)
            found |= _keywords(value, key in ("properties", "$defs", "patternProperties",
                                              "mapping"))
    elif isinstance(node, list):
        for value in node:
            found |= _keywords(value)
    return found


def test_the_schema_uses_json_schema_words_only() -> None:
    """A constraint pydantic cannot translate (`gt` on an optional duration) would be left
    as its own word, which every JSON Schema validator ignores: the schema would be looser
    than the validator without saying so."""
    assert _keywords(SCHEMA) <= JSON_SCHEMA_WORDS


def test_no_keyword_beside_a_union() -> None:
    """A pattern beside `anyOf: [string, null]` holds, but editors and generators look for a
    string's pattern on the string: each constraint sits on the option it constrains."""
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("anyOf", "oneOf"):
                if key in node:
                    assert set(node) - {key, "title", "description", "default",
                                        "discriminator"} == set(), node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(SCHEMA)


@pytest.mark.parametrize("written", [", , ,", ' ,a="b", ,', "\n,\t", ""])
def test_a_selector_is_trimmed_once_and_for_all(written: str) -> None:
    """Blank and commas at either end go, all of them: what check-config prints is loaded back
    unchanged (`, , ,` became `,` and then `` when loaded again; found by the property test)."""
    once = PresetOptions(selector=written, container_selector=written)
    again = PresetOptions(selector=once.selector, container_selector=once.container_selector)
    assert once.selector == again.selector == once.container_selector
    assert once.selector in ("", 'a="b"')
