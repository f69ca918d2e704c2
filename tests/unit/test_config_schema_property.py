"""Schema-driven property test: configs generated from `autoscaler config-schema` go through
the real `check-config`, as a user runs it.

- never a traceback; exit 0 or 2;
- exit 2 only with a named cross-field rule (the schema carries every other rule);
- an accepted config's `--json` validates against the schema, and given back to
  `check-config` it is accepted again, unchanged;
- mutants of a valid config (wrong types, unknown keys, huge and non-finite numbers, unicode,
  NUL characters, deep nesting) get exit 2 with a message naming the key.

Generation walks the schema itself (`strategy`): objects, unions, lists, numbers and
patterns are composed here keyword by keyword (strings from their own pattern with
`st.from_regex`), and hypothesis-jsonschema's `from_schema` takes only a keyword this walk
does not know. (`from_schema` on the whole schema re-canonicalises it at each draw: seconds per
config, and the module ran past 10 minutes.) Every generated config is first checked against
the real schema with jsonschema, so the generator cannot widen the test. A second strategy
draws from the same schema narrowed (keys left out or fixed, never widened) so that most
configs pass the cross-field rules and the "accepted" half of the property is exercised as
much as the refusals.

Fixed seed; AUTOSCALER_SCHEMA_EXAMPLES examples per property (default 100: ~300 examples and
~20 s of CPU for the module, so its properties are `slow`: the full run, `scripts/test`, has
them, the unit tier does not); `scripts/reliability fuzz` runs thousands, shrinking a failure
(the default run reports the first failing example without shrinking it).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, seed
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from autoscaler.cli import main
from autoscaler.config import config_schema
from autoscaler.config.environment import schema_child, schema_types
from autoscaler.config.fields import NO_NUL_PATTERN, PATH_PATTERN
from autoscaler.config.issues import Loc, format_key
from tests.support.configs import example_data, minimal
from tests.support.tier import examples

# A serializer that returns another type than it says warns and goes on: here it fails.
pytestmark = pytest.mark.filterwarnings("error:Pydantic serializer warnings")
EXAMPLES = examples(100, "AUTOSCALER_SCHEMA_EXAMPLES")
SEED = 20261202
REPO = Path(__file__).resolve().parents[2]
SCHEMA = config_schema()
DEFS = SCHEMA["$defs"]
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
# The rules between several keys: the only reasons to refuse a schema-valid config (README).
CROSS_FIELD_RULES = {
    "replica_bounds", "fallback_in_bounds", "backend_fields", "has_policies", "preset_expands",
    "unique_policy_names", "unique_target_names", "one_auth_method", "client_cert_pair",
    "lease_timing", "has_bound", "distinct_preset_scopes",
}
POLICY_RULE = re.compile(r"^[a-z_]+\.cross_field_errors$")
RULE = re.compile(r"\[cross-field rule ([\w.]+)\]$")
# The default run reports a failure at once (shrinking an example that runs check-config two
# times can take minutes); the long run (`scripts/reliability fuzz`) shrinks it.
SETTINGS = hyp_settings(max_examples=EXAMPLES, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck),
                        phases=list(Phase) if "AUTOSCALER_SCHEMA_EXAMPLES" in os.environ
                        else [Phase.explicit, Phase.generate])


# --------------------------------------------------------------------------- generation


TEXT = st.characters(codec="utf-8", exclude_characters="\x00")  # any character but NUL
FREE_PATTERNS = {NO_NUL_PATTERN: 0, PATH_PATTERN: 1}  # any text (but NUL), this long at least


def strategy(node: dict[str, Any], defs: dict[str, Any],
             cache: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values valid against `node` (a part of a schema whose definitions are `defs`).

    Objects, unions and lists are composed here, and a string with a pattern is drawn from
    that pattern; every other leaf (numbers with their bounds, booleans, enums, null) comes
    from hypothesis-jsonschema. `from_schema` on a whole object re-canonicalises it at each
    draw (seconds per config for a schema this size) and draws slowly through long patterns
    such as the cron grammar's. Every config drawn is checked against the real schema
    (`assert_agrees`): a mistake here fails loudly, it cannot widen the test."""
    cache = {} if cache is None else cache
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name not in cache:
            cache[name] = st.deferred(lambda: strategy(defs[name], defs, cache))
        return cache[name]  # type: ignore[no-any-return]
    for key in ("anyOf", "oneOf"):
        if key in node:
            beside = set(node) - {key, "title", "description", "default", "discriminator"}
            assert not beside, f"keywords beside {key}: {beside} (the schema keeps none)"
            return st.one_of([strategy(option, defs, cache) for option in node[key]])
    kind = node.get("type")
    if kind == "object" and node.get("additionalProperties") is False:
        required = set(node.get("required", []))
        props = node.get("properties", {})
        fixed = st.fixed_dictionaries(
            {k: strategy(v, defs, cache) for k, v in props.items() if k in required},
            optional={k: strategy(v, defs, cache) for k, v in props.items()
                      if k not in required})
        if "patternProperties" not in node:
            return fixed
        (name, value), = node["patternProperties"].items()
        return st.dictionaries(st.from_regex(name, fullmatch=True),
                               strategy(value, defs, cache), max_size=3)
    if kind == "array" and isinstance(node.get("items"), dict):
        least = node.get("minItems", 0)
        return st.lists(strategy(node["items"], defs, cache), min_size=least,
                        max_size=node.get("maxItems", least + 3))
    if kind == "string" and "pattern" in node and "enum" not in node and "const" not in node:
        return _string(node)
    return from_schema({k: v for k, v in node.items() if k not in ("title", "description")})


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    pattern = node.get("pattern")
    least, most = node.get("minLength", 0), node.get("maxLength")
    if pattern in FREE_PATTERNS:
        least = max(least, FREE_PATTERNS[pattern])
        text = st.text(TEXT, min_size=least, max_size=max(least, 12) if most is None else most)
    else:
        assert pattern is not None, f"a string without a pattern: {node}"
        # fullmatch: the pattern's `$` is the end of the text, as in ECMA-262 (the schema's
        # regular expressions) and in the validator, not "before a final newline" as in `re`
        text = st.from_regex(pattern, fullmatch=True, alphabet=TEXT)
    if pattern not in FREE_PATTERNS and (least or most is not None):
        text = text.filter(lambda v: least <= len(v) and (most is None or len(v) <= most))
    if "not" in node:
        # a positive duration refuses all zeros: the first 0 made a 1 keeps the grammar's
        # digit counts, so few draws are thrown away (the filter stays, for any other `not`)
        refused = re.compile(node["not"]["pattern"])
        text = text.map(lambda v: v.replace("0", "1", 1) if refused.search(v) else v).filter(
            lambda v: not refused.search(v))
    return text


def narrowed_schema() -> dict[str, Any]:
    """The schema with keys fixed or left out so that the cross-field rules mostly hold: one
    swarm target with a service and a preset, no explicit policies, guards with `above`, no
    leader election or second auth method. Only narrower: every config it allows, the real
    schema allows too (asserted in the test)."""
    schema = copy.deepcopy(SCHEMA)
    defs = schema["$defs"]
    target = defs["TargetConfig"]
    for key in ("namespace", "deployment", "statefulset", "scale_target_ref", "min_replicas",
                "fallback_replicas", "on_metric_error", "policies"):
        target["properties"].pop(key)
    target["properties"]["backend"] = {"const": "swarm"}
    target["properties"]["service"] = {"type": "string", "minLength": 1,
                                       "pattern": NO_NUL_PATTERN}
    preset = target["properties"]["preset"]
    target["properties"]["preset"] = next(o for o in preset["anyOf"] if o.get("type") != "null")
    target["required"] = ["name", "backend", "service", "max_replicas", "preset"]
    defs["GuardConfig"]["required"] = ["query", "above"]
    schema["properties"]["targets"]["maxItems"] = 1
    schema["properties"].pop("leader_election")
    defs["PrometheusConfig"]["properties"].pop("basic_auth")
    return schema


FROM_SCHEMA = strategy(SCHEMA, DEFS)
NARROWED_SCHEMA = narrowed_schema()
NARROWED = strategy(NARROWED_SCHEMA, NARROWED_SCHEMA["$defs"])


# --------------------------------------------------------------------------- the command


def write(path: Path, data: Any) -> Path:
    """`data` as a YAML file, unicode as it is; PyYAML writes a NEL (U+0085) unescaped in a
    single-quoted string and reads it back as a space, so where that would change the data,
    with every non-ASCII character escaped (the file is then ASCII: the same data)."""
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    if repr(yaml.safe_load(text)) != repr(data):  # repr: a NaN mutant equals itself
        text = yaml.safe_dump(data, allow_unicode=False, sort_keys=False)
        assert repr(yaml.safe_load(text)) == repr(data), "PyYAML cannot write this data back"
    path.write_text(text, encoding="utf-8")
    return path


def check_config(path: Path) -> tuple[int, str, str]:
    """`autoscaler check-config --json PATH` through the command's own entry, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["check-config", "--json", str(path)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def problems(err: str) -> list[str]:
    return [line[2:] for line in err.splitlines() if line.startswith("  ")]


def assert_agrees(tmp: Path, data: Any) -> str:
    """The property for one schema-valid config; returns the outcome for statistics."""
    VALIDATOR.validate(data)
    code, out, err = check_config(write(tmp / "config.yaml", data))
    assert "Traceback" not in out + err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        for line in problems(err):
            found = RULE.search(line)
            assert found, f"a schema-valid config refused by a key's own rule: {line}"
            assert found[1] in CROSS_FIELD_RULES or POLICY_RULE.match(found[1]), line
            event(f"rule {found[1]}")
        return "refused by a cross-field rule"
    dumped = json.loads(out)
    VALIDATOR.validate(dumped)
    again, out_again, err_again = check_config(write(tmp / "again.yaml", dumped))
    assert again == 0, err_again
    assert json.loads(out_again) == dumped, "accepted again, but changed"
    return "accepted"


def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("schema")


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [v for v in os.environ if v.upper().startswith("AUTOSCALER_")]:
        monkeypatch.delenv(variable)


@pytest.mark.slow  # ~10-30 s each: the full run (`scripts/test`), not the unit tier
@seed(SEED)
@SETTINGS
@given(data=FROM_SCHEMA)
def test_configs_from_the_schema(tmp_path_factory: pytest.TempPathFactory, data: Any) -> None:
    event(assert_agrees(tmp_dir(tmp_path_factory), data))


@pytest.mark.slow  # ~10-30 s each: the full run (`scripts/test`), not the unit tier
@seed(SEED)
@SETTINGS
@given(data=NARROWED)
def test_configs_from_the_narrowed_schema(tmp_path_factory: pytest.TempPathFactory,
                                          data: Any) -> None:
    event(assert_agrees(tmp_dir(tmp_path_factory), data))


def test_the_narrowed_schema_is_narrower() -> None:
    """A few of its configs: each is valid against the real schema (assert_agrees checks it
    for every example; this one says why the narrowed strategy is legitimate)."""
    narrowed = jsonschema.Draft202012Validator(NARROWED_SCHEMA)
    assert narrowed.is_valid(minimal())
    assert not narrowed.is_valid({"targets": []})


# --------------------------------------------------------------------------- mutants


def leaves(node: Any, loc: Loc = ()) -> list[Loc]:
    """Paths of the scalar values (and empty containers) in a document."""
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in leaves(v, (*loc, k))]
    if isinstance(node, list) and node:
        return [p for i, v in enumerate(node) for p in leaves(v, (*loc, i))]
    return [loc]


def objects(node: Any, loc: Loc = ()) -> list[Loc]:
    """Paths of the mappings in a document (where an unknown key can go)."""
    found = [loc] if isinstance(node, dict) else []
    if isinstance(node, dict):
        found += [p for k, v in node.items() for p in objects(v, (*loc, k))]
    elif isinstance(node, list):
        found += [p for i, v in enumerate(node) for p in objects(v, (*loc, i))]
    return found


def schema_at(loc: Loc) -> Any:
    node: Any = SCHEMA
    for part in loc:
        node = schema_child(node, str(part), DEFS)
    return node


def set_at(data: Any, loc: Loc, value: Any) -> None:
    for part in loc[:-1]:
        data = data[part]
    data[loc[-1]] = value


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


FREE_TEXT = (NO_NUL_PATTERN, PATH_PATTERN)  # any text but NUL: unicode is fine there
WRONG_TYPE = {"string": "text", "integer": 7, "number": 7.5, "boolean": True, "array": [1],
              "object": {"k": 1}, "null": None}
BASES = [minimal(), example_data(),
         minimal(prometheus={"headers": {"X-Scope-OrgID": "t"}, "bearer_token_file": "/t"})]


@st.composite
def mutants(draw: st.DrawFn) -> tuple[Any, Loc, str]:
    """(a valid document made invalid at one key, that key, what was done)."""
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    kind = draw(st.sampled_from(["wrong type", "unknown key", "huge number", "non-finite",
                                 "unicode", "NUL", "deep nesting"]))
    if kind == "unknown key":
        where = draw(st.sampled_from(objects(data)))
        key = draw(st.sampled_from(["unknown", "ünknown_kéy", "Targets", "max replicas",
                                    "timeout\u200b"]))
        if where and where[-1] == "headers":
            key = "not a header"
        set_at(data, (*where, key), 1) if where else data.__setitem__(key, 1)
        return data, (*where, key), kind
    loc = draw(st.sampled_from(leaves(data)))
    node = schema_at(loc)
    types = schema_types(node, DEFS)
    if kind == "wrong type":
        wrong = [t for t in WRONG_TYPE if t not in types
                 and not (t == "integer" and "number" in types)
                 and not (t == "number" and "integer" in types)]
        value = WRONG_TYPE[draw(st.sampled_from(wrong))]
    elif kind == "huge number":
        value = draw(st.sampled_from([10**400, -(10**400), 2**1100]))
    elif kind == "non-finite":
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    elif kind == "NUL":
        value = draw(st.sampled_from(["\x00", "a\x00", "\x00/etc/passwd", "15s\x00"]))
    elif kind == "deep nesting":
        value = nested(draw(st.integers(20, 200)))
    else:  # unicode where the key has a shape or a set of values: look-alikes do not pass
        value = draw(st.sampled_from(["１５s", "١٥s", "ｓｍｔｐ", "scale_ｄown", "ſwarm",
                                      "127.0.0.1:９464", "http://ｄb"]))
        if "string" in types and all(o.get("pattern", NO_NUL_PATTERN) in FREE_TEXT
                                     and "enum" not in o and "const" not in o
                                     for o in _string_options(node)):
            value = 12.5 if "number" not in types else [value]  # a free text: no shape to miss
    set_at(data, loc, value)
    return data, loc, kind


def _string_options(node: Any) -> list[dict[str, Any]]:
    if not isinstance(node, dict):
        return []
    if "$ref" in node:
        return _string_options(DEFS[node["$ref"].rsplit("/", 1)[1]])
    found = [node] if node.get("type") == "string" else []
    for option in node.get("anyOf", []) + node.get("oneOf", []):
        found += _string_options(option)
    return found


@pytest.mark.slow  # ~10-30 s each: the full run (`scripts/test`), not the unit tier
@seed(SEED)
@SETTINGS
@given(mutant=mutants())
def test_mutants_are_refused_naming_the_key(tmp_path_factory: pytest.TempPathFactory,
                                            mutant: tuple[Any, Loc, str]) -> None:
    data, loc, kind = mutant
    event(kind)
    path = write(tmp_dir(tmp_path_factory) / "config.yaml", data)
    code, out, err = check_config(path)
    assert "Traceback" not in out + err, err
    assert code == 2, f"{kind} at {format_key(loc)} accepted"
    key = format_key(loc)
    assert any(f": {key}" in line or f": {key}." in line or f": {key}[" in line
               for line in problems(err)), (key, err)
    if kind != "non-finite":  # JSON has no NaN/±Inf: a schema cannot say a word about them
        assert not VALIDATOR.is_valid(data), "the schema accepts what check-config refuses"


# --------------------------------------------------------------------------- real process


@pytest.mark.slow  # ~10-30 s each: the full run (`scripts/test`), not the unit tier
@seed(SEED)
@hyp_settings(max_examples=4, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
@given(data=NARROWED)
def test_through_the_real_command(tmp_path_factory: pytest.TempPathFactory, data: Any) -> None:
    """The shell's view of the same property: `autoscaler check-config --json` as a process."""
    path = write(tmp_dir(tmp_path_factory) / "config.yaml", data)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    done = subprocess.run([sys.executable, "-m", "autoscaler.cli", "check-config", "--json",
                           str(path)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode in (0, 2), done.stderr
    if done.returncode == 0:
        VALIDATOR.validate(json.loads(done.stdout))
    else:
        assert all(RULE.search(line) for line in problems(done.stderr)), done.stderr
