"""`autoscaler check-config` on generated files: exit 0 for a valid config, exit 2 with a message
naming the file for an invalid one, never a traceback, never a hang.

The files are the mutated and random documents of `test_config`'s fuzz (as YAML, JSON and TOML)
and junk made to hurt a loader: wrong types, huge numbers, bad durations, deep nesting, binary,
invalid UTF-8, empty files, duplicate keys, YAML tags, anchors/aliases (shared lists and
"billion laughs" bombs). Each goes through the command's own code path in-process
(`autoscaler.cli.main` with stdout/stderr captured and SystemExit caught); a table of the worst
kinds also goes through a real `autoscaler check-config` process under a memory limit.

Default: AUTOSCALER_FUZZ_EXAMPLES (100) examples; `scripts/reliability fuzz --examples 10000`
runs the long version and records its figures in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from autoscaler.cli import main
from autoscaler.config import ConfigError, load_config
from tests.support.configs import EXAMPLE, example_data
from tests.support.strategies import PLAUSIBLE_KEYS, documents, keys, to_toml, values
from tests.support.tier import examples

EXAMPLES = examples(100, "AUTOSCALER_FUZZ_EXAMPLES")
REPO = Path(__file__).resolve().parents[2]


def valid_yaml() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- junk generators


def alias_bomb(width: int, depth: int) -> str:
    """`depth` levels of lists, each holding `width` aliases of the level below:
    width**depth values once expanded, a few lines on disk."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, depth + 1):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"targets: *a{depth}")
    return "\n".join(lines) + "\n"


def shared_policies(copies: int) -> str:
    """A VALID config that shares one policy list between targets through an anchor."""
    targets = "\n".join(
        f"  - {{name: t{i}, backend: swarm, service: s{i}, max_replicas: 5, "
        f"policies: *pol}}" for i in range(1, copies))
    return ("targets:\n"
            "  - name: t0\n    backend: swarm\n    service: s0\n    max_replicas: 5\n"
            "    policies: &pol\n"
            "      - {type: threshold, query: 'avg(cpu)', scale_up_above: 70}\n"
            + (targets + "\n" if targets else ""))


def nested(depth: int, style: str) -> str:
    if style == "yaml-flow":
        return "targets: " + "[" * depth + "]" * depth + "\n"
    if style == "yaml-block":
        return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "x: 1\n"
    if style == "toml":
        return "targets = " + "[" * depth + "]" * depth + "\n"
    return "targets:\n" + "".join("  " * (i + 1) + "- \n" for i in range(depth))


def duplicated(text: str, line: int) -> str:
    """The document with one of its top-level lines (a key) given twice."""
    lines = text.splitlines()
    top = [n for n, s in enumerate(lines) if s and not s[0].isspace() and not s.startswith("#")
           and ":" in s]
    n = top[line % len(top)]
    return "\n".join([*lines, lines[n]]) + "\n"


def broken_utf8(text: str, at: int, garbage: bytes) -> bytes:
    raw = text.encode()
    at %= max(len(raw), 1)
    return raw[:at] + garbage + raw[at:]


bad_durations = st.one_of(
    st.sampled_from(["5x", "-1s", "1h-", "1e999s", "99999999999999999999h", "s", "1.5.5m",
                     "PT5M", "5 m", "0", "-0", "inf", "nan", "1h30m", "15s"]),
    st.text(alphabet="0123456789hmsµun.-+ e", max_size=12),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
)
duration_keys = st.sampled_from([
    ("evaluation_interval",), ("prometheus", "timeout"), ("prometheus", "scrape_interval"),
    ("leader_election", "lease_duration"), ("simulation", "startup_delay"),
])
huge_numbers = st.sampled_from([2**63, 2**64 + 1, 10**400, -(10**400), 1e308, 1e309])


@st.composite
def wrong_value_in_example(draw: st.DrawFn) -> str:
    """The valid example with one duration or replica bound made bad (or kept valid)."""
    doc = example_data()
    path = draw(duration_keys)
    node = doc
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = draw(bad_durations)
    if draw(st.booleans()):
        target = doc["targets"][0]
        target[draw(st.sampled_from(["min_replicas", "max_replicas"]))] = draw(
            huge_numbers | st.integers(-3, 30))
    return yaml.safe_dump(doc, allow_unicode=True)


yaml_tags = st.sampled_from([
    "targets: !!python/object/apply:os.system ['true']\n",
    "targets: !!binary aGVsbG8=\n",
    "evaluation_interval: !!timestamp 2001-12-14\n" + "targets: []\n",
    "targets: !!set {a, b}\n",
    "targets: !custom [1]\n",
    "? [a, b]\n: 1\ntargets: []\n",
    "%YAML 1.1\n---\ntargets: []\n...\n---\nb: 2\n",
    "targets: *undefined\n",
    "<<: {targets: []}\n",
])
empty_like = st.sampled_from(["", " ", "\n\n", "---\n", "~\n", "null\n", "# comment only\n",
                              "\ufeff", "[]\n", "0\n", "''\n", "\x00"])

# (suffix, body) pairs
junk = st.one_of(
    st.tuples(st.just(".yaml"), st.builds(alias_bomb, st.integers(2, 12), st.integers(1, 9))),
    st.tuples(st.just(".yaml"), st.builds(shared_policies, st.integers(1, 40))),
    st.tuples(st.sampled_from([".yaml", ".toml"]),
              st.builds(nested, st.integers(1, 3000),
                        st.sampled_from(["yaml-flow", "yaml-block", "yaml-list"]))),
    st.tuples(st.just(".toml"), st.builds(nested, st.integers(1, 3000), st.just("toml"))),
    st.tuples(st.just(".yaml"), st.builds(duplicated, st.just(valid_yaml()),
                                          st.integers(0, 100))),
    st.tuples(st.sampled_from([".yaml", ".toml"]),
              st.builds(broken_utf8, st.just(valid_yaml()), st.integers(0, 10**6),
                        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80",
                                         b"\x00", b"\xef\xbb\xbf"]))),
    st.tuples(st.just(".yaml"), wrong_value_in_example()),
    st.tuples(st.just(".yaml"), yaml_tags),
    st.tuples(st.sampled_from([".yaml", ".toml", ".yml", ".json", ""]), empty_like),
    st.tuples(st.sampled_from([".yaml", ".toml"]), st.binary(max_size=2000)),
    st.tuples(st.just(".toml"),
              st.dictionaries(st.sampled_from(PLAUSIBLE_KEYS) | keys, values, max_size=8)
              .map(lambda d: to_toml(d) + to_toml(d))),  # duplicate keys in TOML
    st.tuples(st.just(".yaml"), st.text(max_size=3000)),
)
generated = st.one_of(
    st.tuples(st.just(".yaml"), documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True))),
    st.tuples(st.just(".toml"), documents.map(to_toml)),
    st.tuples(st.just(".json"), documents.map(json.dumps)),
    junk,
)


# --------------------------------------------------------------------------- the command


def check_config(path: Path) -> tuple[int, str, str]:
    """`autoscaler check-config PATH` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["check-config", str(path)])
        except SystemExit as exc:  # argparse, or anything calling sys.exit
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_outcome(path: Path, code: int, out: str, err: str) -> bool:
    """The command's answer agrees with the loader; True when the file was valid."""
    assert "Traceback" not in out + err, err
    assert code in (0, 2), (code, out, err)
    try:
        load_config(path, environ={})
        valid = True
    except ConfigError:
        valid = False
    if code == 0:
        assert valid, "check-config accepted what the loader refuses"
        assert out.startswith(f"# {path}: valid."), out[:200]
        assert all(line.startswith("autoscaler: warning: ") for line in err.splitlines()), err
    else:
        assert not valid, "check-config refused what the loader accepts"
        assert err.startswith(f"{path}: "), err[:300]
        assert f"  {path}" in err, "every problem line names the file"
        assert out == ""
    return valid


@hyp_settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(content=generated)
def test_fuzz_check_config_exits_0_or_2_naming_the_file(content: tuple[str, str | bytes]) -> None:
    suffix, body = content
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"config{suffix}"
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body, encoding="utf-8", errors="surrogatepass")
        code, out, err = check_config(path)
        event("exit 0 (valid)" if assert_outcome(path, code, out, err) else "exit 2 (invalid)")


# --------------------------------------------------------------------------- tables

JUNK_TABLE: list[tuple[str, str, str | bytes, int, str]] = [
    ("billion-laughs", ".yaml", alias_bomb(9, 9), 2, "aliases"),
    ("bomb-just-over", ".yaml", alias_bomb(10, 5), 2, "aliases"),
    ("recursive-alias", ".yaml", "a: &a [*a]\ntargets: *a\n", 2, "nested too deeply"),
    ("shared-policies-valid", ".yaml", shared_policies(30), 0, "valid"),
    ("duplicate-top-key", ".yaml", duplicated(valid_yaml(), 0), 2, "given twice"),
    ("duplicate-nested-key", ".yaml", "targets:\n  - name: a\n    name: b\n"
     "    backend: swarm\n    service: s\n    max_replicas: 2\n    preset: stalwart-smtp\n",
     2, "targets[0].name"),
    ("merge-key-not-duplicate", ".yaml", "targets:\n  - <<: {name: a, backend: swarm}\n"
     "    <<: {service: s}\n    max_replicas: 2\n    preset: stalwart-smtp\n", 0, "valid"),
    ("deep-yaml", ".yaml", nested(5000, "yaml-flow"), 2, "nested too deeply"),
    ("deep-toml", ".toml", nested(5000, "toml"), 2, "TOML"),
    ("invalid-utf8", ".yaml", broken_utf8(valid_yaml(), 10, b"\xff"), 2, "UTF-8"),
    ("python-tag", ".yaml", "targets: !!python/object/apply:os.system ['true']\n", 2, "YAML"),
    ("empty", ".yaml", "", 2, "targets"),
    ("binary", ".toml", bytes(range(256)), 2, "UTF-8"),
    ("huge-int", ".yaml", re.sub(r"max_replicas: \d+", f"max_replicas: {10**400}", valid_yaml(),
                                 count=1), 2, "max_replicas"),
]


@pytest.mark.parametrize(("suffix", "body", "code", "says"),
                         [row[1:] for row in JUNK_TABLE], ids=[row[0] for row in JUNK_TABLE])
def test_junk_in_process(tmp_path: Path, suffix: str, body: str | bytes, code: int,
                         says: str) -> None:
    path = tmp_path / f"config{suffix}"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body, encoding="utf-8")
    got, out, err = check_config(path)
    assert got == code, (out, err)
    assert says in (out if code == 0 else err), err
    assert_outcome(path, got, out, err)


def limit_memory() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))


@pytest.mark.parametrize("name", ["billion-laughs", "recursive-alias", "deep-yaml",
                                  "deep-toml", "invalid-utf8", "binary", "huge-int",
                                  "shared-policies-valid"])
def test_junk_through_the_real_command(tmp_path: Path, name: str) -> None:
    """The shell's view: exit code, no traceback; within 1.5 GB of address space and a
    generous time (a bomb expanded would need far more of both)."""
    _, suffix, body, code, says = next(r for r in JUNK_TABLE if r[0] == name)
    path = tmp_path / f"config{suffix}"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    done = subprocess.run([sys.executable, "-m", "autoscaler.cli", "check-config", str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=limit_memory, check=False)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert says in (done.stdout if code == 0 else done.stderr)
    if code == 2:
        assert done.stderr.startswith(f"{path}: ")

