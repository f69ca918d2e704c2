"""The long fuzz runs: config files through `check-config` and Prometheus answers through
`PrometheusSource`, each with N generated examples (default 10,000).

Run: `scripts/reliability fuzz [--examples 10000]`. Each fuzz test runs in its own pytest
process with AUTOSCALER_FUZZ_EXAMPLES=N and hypothesis' statistics on; the examples run,
failures, the share of each outcome and the wall and CPU time are written to the "fuzzing"
section of docs/reliability.md (or of the file $RELIABILITY_DOC names). The same tests run in
the default test suite with a few dozen examples.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._stack import REPO
from bench.reliability_doc import write_section
from bench.report import machine


@dataclass(frozen=True)
class Fuzz:
    name: str
    test: str
    what: str


FUZZES = [
    Fuzz("config files -> check-config",
         "tests/unit/test_fuzz_check_config.py::"
         "test_fuzz_check_config_exits_0_or_2_naming_the_file",
         "YAML/TOML/JSON files: mutated valid configs, random documents, wrong types, huge "
         "numbers, bad durations, deep nesting, binary, invalid UTF-8, empty, duplicate keys, "
         "YAML tags, anchors/aliases and alias bombs; `autoscaler.cli.main(['check-config', "
         "F])` in-process: exit 0 and the effective config for a valid file, exit 2 naming "
         "the file for an invalid one (and the loader agrees), never a traceback"),
    Fuzz("configs from the JSON Schema -> check-config",
         "tests/unit/test_config_schema_property.py::test_configs_from_the_schema",
         "configs generated from `autoscaler config-schema` (the schema walked, strings from "
         "their patterns, other leaves from hypothesis-jsonschema; each checked against the "
         "schema with jsonschema) through "
         "`check-config --json`: never a traceback, exit 2 only with a named cross-field "
         "rule, an accepted config's JSON validates against the schema and is accepted again "
         "unchanged"),
    Fuzz("configs from the narrowed schema -> check-config",
         "tests/unit/test_config_schema_property.py::test_configs_from_the_narrowed_schema",
         "the same property on the schema narrowed (never widened) so that most configs pass "
         "the cross-field rules: the accepted-and-round-trips half exercised"),
    Fuzz("schema mutants -> check-config",
         "tests/unit/test_config_schema_property.py::test_mutants_are_refused_naming_the_key",
         "valid configs with one key made wrong (wrong JSON type, unknown key, huge and "
         "non-finite numbers, unicode look-alikes, NUL characters, deep nesting): exit 2 "
         "with a message naming the key, and the schema refuses them too"),
    Fuzz("Prometheus answers -> PrometheusSource -> evaluate",
         "tests/unit/test_fuzz_prometheus_http.py::"
         "test_fuzz_every_answer_becomes_a_signal_state_and_never_lowers_the_size",
         "a real HTTP server on loopback answering generated status codes, Content-Types and "
         "bodies (well-formed answers with hostile values and timestamps, random JSON, "
         "binary, invalid UTF-8, 200,000-deep nesting, truncated JSON) or a broken exchange "
         "(garbage status line, body shorter than Content-Length, closed connection, answer "
         "slower than the timeout); an instant and a range signal read through `read()`: "
         "nothing escapes, each is ok/empty/nan/stale/error, a header secret never shows; "
         "then `evaluate()`: never outside [min, max], no scale-down unless every signal "
         "is ok, held when none is"),
    Fuzz("decoded answers -> classify_response",
         "tests/unit/test_prometheus_classify.py::test_fuzz_never_raises",
         "random JSON and well-shaped answers with hostile parts straight into the pure "
         "classifier: never raises, one-line detail without the secret, ok only with finite "
         "sorted samples"),
]

_COUNTS = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")
_EVENT = re.compile(r"^\s+\* ([\d.]+)%, (.+)$", re.M)
_NOISE = ("Retried draw", "Draw for", "Aborted test", "gave up because")


def run_one(fuzz: Fuzz, examples: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    env["AUTOSCALER_FUZZ_EXAMPLES"] = env["AUTOSCALER_SCHEMA_EXAMPLES"] = str(examples)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", fuzz.test, "-q", "-p", "no:cacheprovider",
         "--hypothesis-show-statistics", "-o", "timeout=0"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = done.stdout + done.stderr
    log = Path(tempfile.gettempdir()) / f"reliability-fuzz-{fuzz.test.split('::')[-1]}.log"
    log.write_text(out)
    passing = failing = invalid = 0
    for p, f, i in _COUNTS.findall(out):
        passing, failing, invalid = passing + int(p), failing + int(f), invalid + int(i)
    events = [(float(pct), what.strip()) for pct, what in _EVENT.findall(out)
              if not what.strip().startswith(_NOISE)]
    return {"fuzz": fuzz, "code": done.returncode, "wall": wall, "cpu": cpu,
            "passing": passing, "failing": failing, "invalid": invalid, "events": events,
            "tail": "\n".join([*(line for line in out.splitlines()
                                 if line.startswith(("E ", "Falsifying", "FAILED")))][:60])
                    + f"\n(whole output: {log})"}


def render(results: list[dict[str, Any]], examples: int, command: str, started: str,
           ended: str) -> str:
    rows, outcomes = [], []
    for r in results:
        fuzz = r["fuzz"]
        assert isinstance(fuzz, Fuzz)
        verdict = "passed" if r["code"] == 0 else f"FAILED (pytest exit {r['code']})"
        rows.append(f"| {fuzz.name} | {r['passing']:,} | {r['failing']} | "
                    f"{float(r['wall']):.0f} s | {float(r['cpu']):.0f} s | {verdict} |")
        events = r["events"]
        assert isinstance(events, list)
        if events:
            outcomes.append(f"- {fuzz.name}: " + ", ".join(
                f"{what} {pct:.1f} %" for pct, what in events))
    what = "\n".join(f"- **{f.name}** (`{f.test.split('::')[0]}`): {f.what}." for f in FUZZES)
    return "\n".join([
        "## Fuzzing",
        "",
        "Generated input through the real code paths, with hypothesis. What each fuzz feeds "
        "and what it asserts:",
        "",
        what,
        "",
        "The YAML loader bounds what it expands: a file whose aliases expand to more than "
        "100,000 values is refused with a message (a 9 x 9 \"billion laughs\" file used to "
        "hang `check-config`); duplicate keys in one YAML mapping are errors (YAML would "
        "silently keep the last); replica counts above 2^31 - 1 are refused (10^400 was "
        "accepted and would have overflowed the daemon's metrics). A table of the worst "
        "files also runs through a real `autoscaler check-config` process under a 1.5 GB "
        "address-space limit (`test_junk_through_the_real_command`). A policy whose "
        "arithmetic overflows on a huge finite value (capacity on 1.7e308 x 1.5) now reports "
        "nothing (held) instead of failing the target's tick "
        "(`test_a_value_a_policy_cannot_compute_is_not_reported`).",
        "",
        "Commands: the default test run has each fuzz with a few dozen examples "
        "(`AUTOSCALER_FUZZ_EXAMPLES`, default 100 for check-config, 60 for the HTTP fuzz, "
        "300 for the classifier; `AUTOSCALER_SCHEMA_EXAMPLES`, default 100, for the schema "
        "properties); `scripts/reliability fuzz [--examples 10000]` runs each "
        "with N examples in its own pytest process and rewrites this section.",
        "",
        f"Last run: `{command}`, {started} to {ended} (UTC), {examples:,} examples asked per "
        f"fuzz. Machine: {machine()}; other work shared the machine (wall times are long "
        "for that reason).",
        "",
        "| fuzz | examples passed | failing | wall | CPU | result |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Outcomes (share of examples; an example can count in several):",
        "",
        *outcomes,
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--only", help="run only the fuzz whose name contains this")
    args = parser.parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    results = []
    for fuzz in FUZZES:
        if args.only and args.only not in fuzz.name:
            continue
        print(f"fuzz: {fuzz.name}, {args.examples:,} examples ...", flush=True)
        result = run_one(fuzz, args.examples)
        print(f"  {result['passing']} passing, {result['failing']} failing, "
              f"{float(result['wall']):.0f} s", flush=True)
        if result["code"] != 0:
            print(result["tail"], file=sys.stderr)
        results.append(result)
    ended = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    command = shlex.join(["scripts/reliability", "fuzz",
                          *(argv if argv is not None else sys.argv[1:])])
    text = render(results, args.examples, command, started, ended)
    print(text)
    path = write_section("fuzzing", text)
    print(f"wrote the fuzzing section of {path}")
    return 0 if all(r["code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
