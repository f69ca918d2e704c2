"""The `autoscaler` command: exit codes, what goes to stdout and stderr, and simulate's files.

Most runs call `autoscaler.cli.main` in-process; a few go through a real interpreter to prove
the exit codes the shell sees and that bad input never shows a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.cli import bundled_config_path, main
from autoscaler.config import load_config, redacted_dump
from autoscaler.trace import bundled_traces

EXAMPLE = bundled_config_path()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMELINE_KEYS = {"t", "demand", "replicas", "ready", "queue", "cpu"}

BAD_CONFIG = """\
evaluation_interval: 5x
prometheus:
  tmeout: 5s
targets:
  - name: smtp
    backend: swarm
    min_replicas: 5
    max_replicas: 2
    cooldown: {up: abc}
    preset: stalwart-smtp
"""
# (line, key) of every problem in BAD_CONFIG
BAD_CONFIG_ISSUES = [
    (1, "evaluation_interval"),
    (3, "prometheus.tmeout"),
    (5, "targets[0].service"),
    (7, "targets[0].min_replicas"),
    (9, "targets[0].cooldown.up"),
]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AUTOSCALER_* variable from the caller's shell; files land in tmp_path."""
    for name in list(os.environ):
        if name.upper().startswith("AUTOSCALER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_process(cwd: Path, *argv: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    return subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", *argv],
        capture_output=True, text=True, cwd=cwd, env={**clean, **(env or {})}, timeout=300,
        check=False,
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def small_trace(tmp_path: Path, name: str = "small.csv", rows: int = 240) -> Path:
    """Base 10,000/h with a 50,000/h burst in the middle third: 15 s steps."""
    lines = ["t,demand"]
    for i in range(rows):
        burst = rows // 3 <= i < 2 * rows // 3
        lines.append(f"{i * 15},{50_000 if burst else 10_000}")
    return write(tmp_path, name, "\n".join(lines) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- check-config


def test_check_config_prints_the_effective_config_as_yaml(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "check-config", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith(f"# {EXAMPLE}: valid")
    printed = yaml.safe_load(out)
    expansions = [t.pop("effective") for t in printed["targets"]]
    assert printed == redacted_dump(load_config(EXAMPLE, environ={}))
    assert [t["name"] for t in printed["targets"]] == ["smtp", "imap"]
    assert printed["targets"][1]["cooldown"] == {"up": "1m", "down": "10m"}, "durations shown"
    assert expansions == [t.expansion() for t in load_config(EXAMPLE, environ={}).targets]


def test_check_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check-config", str(EXAMPLE), "--json")
    assert code == 0
    printed = json.loads(out)
    assert printed == redacted_dump(load_config(EXAMPLE, environ={})), "the config, no more"


EXPLICIT = """\
targets:
  - name: smtp
    backend: swarm
    service: mail_smtp
    max_replicas: 5
    preset: stalwart-smtp
    guards: [{name: mine, query: 'max(x)', above: 3}]
    policies: [{type: capacity, name: extra, query: 'sum(y)'}]
  - name: plain
    backend: swarm
    service: other
    max_replicas: 5
    policies: [{type: threshold, query: 'avg(z)', scale_up_above: 5}]
"""


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_check_config_prints_every_targets_effective_policies_and_guards(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, as_json: bool
) -> None:
    """The preset's expansion (with its selectors), then the explicit policies and guards."""
    path = write(tmp_path, "e.yaml", EXPLICIT)
    code, out, _ = run(capsys, "check-config", str(path),
                       *(["--json", "--expand"] if as_json else []))
    assert code == 0
    printed = json.loads(out) if as_json else yaml.safe_load(out)
    smtp, plain = (t["effective"] for t in printed["targets"])
    assert [(p["name"], p["type"]) for p in smtp["policies"]] == [
        ("inflow", "forecast"), ("cpu", "threshold"), ("inflow_seasonal", "seasonal"),
        ("extra", "capacity")]
    assert 'queue_queue_message{service="mail_smtp"}' in smtp["policies"][0]["query"]
    assert smtp["policies"][0]["lead"] == "1m30s", "durations as written in a config"
    assert [g["name"] for g in smtp["guards"]] == ["active_deliveries", "mine"]
    assert smtp["guards"][0]["block"] == "scale_down" and smtp["guards"][0]["above"] == 20.0
    assert smtp["selector"] == 'service="mail_smtp"'
    assert smtp["container_selector"] == (
        'container_label_com_docker_swarm_service_name="mail_smtp"')
    assert plain == {"policies": [{"type": "threshold", "query": "avg(z)", "tolerance": 0.0,
                                   "scale_up_above": 5.0, "for": "0s", "step": 1,
                                   "spreads": True, "margin": 0.1}],
                     "guards": []}


def test_check_config_hides_header_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "  timeout: 5s\n", "  timeout: 5s\n  headers: {Authorization: Bearer t0ps3cret}\n")
    code, out, _ = run(capsys, "check-config", str(write(tmp_path, "h.yaml", text)), "--json")
    assert code == 0
    assert "t0ps3cret" not in out
    assert json.loads(out)["prometheus"]["headers"] == {"Authorization": "<redacted>"}


def test_check_config_lists_every_issue_with_file_line_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "bad.yaml", BAD_CONFIG)
    code, out, err = run(capsys, "check-config", str(path))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines[0] == f"{path}: {len(BAD_CONFIG_ISSUES)} problem(s):"
    for (line, key), printed in zip(BAD_CONFIG_ISSUES, lines[1:], strict=True):
        assert printed.startswith(f"  {path}:{line}: {key}: ")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        pytest.param("missing.yaml", None, "cannot read", id="missing-file"),
        pytest.param("bad.yaml", "a: [1,\n", "invalid YAML", id="invalid-yaml"),
        pytest.param("bad.toml", "a = = 1\n", "invalid TOML", id="invalid-toml"),
        pytest.param("empty.yaml", "", "targets: Field required", id="empty-file"),
        pytest.param("list.yaml", "- a\n", "mapping", id="list"),
    ],
)
def test_check_config_file_problems_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: str | None,
    fragment: str,
) -> None:
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    code, out, err = run(capsys, "check-config", str(path))
    assert (code, out) == (2, "")
    assert fragment in err
    assert str(path) in err


def test_check_config_process_exit_codes(tmp_path: Path) -> None:
    ok = run_process(tmp_path, "check-config", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["targets"][0]["name"] == "smtp"

    bad = run_process(tmp_path, "check-config", str(write(tmp_path, "bad.yaml", BAD_CONFIG)))
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    for line, key in BAD_CONFIG_ISSUES:
        assert f"bad.yaml:{line}: {key}: " in bad.stderr

    missing = run_process(tmp_path, "check-config", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "missing.yaml" in missing.stderr


def test_check_config_process_applies_the_environment(tmp_path: Path) -> None:
    done = run_process(tmp_path, "check-config", str(EXAMPLE), "--json",
                       env={"AUTOSCALER_DRY_RUN": "true", "AUTOSCALER_PROMETHEUS__TIMEOUT": "30s"})
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["dry_run"], printed["prometheus"]["timeout"]) == (True, "30s")

    bad = run_process(tmp_path, "check-config", str(EXAMPLE),
                      env={"AUTOSCALER_DRY_RUN": "maybe"})
    assert bad.returncode == 2
    assert "environment AUTOSCALER_DRY_RUN: dry_run: " in bad.stderr


def test_check_config_non_string_top_level_key_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8") + "1: one\n"
    code, _, err = run(capsys, "check-config", str(write(tmp_path, "k.yaml", text)))
    assert code == 2
    assert "k.yaml:" in err


def test_invalid_preset_option_exits_2_in_check_config_and_simulate(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "      edition: community\n", "      edition: community\n      drain_within: 5x\n")
    path = write(tmp_path, "p.yaml", text)
    trace = small_trace(tmp_path, rows=20)
    simulate = run_process(tmp_path, "simulate", "--config", str(path), "--trace", str(trace),
                           "--plot", "none")
    assert "Traceback" not in simulate.stderr
    assert simulate.returncode == 2
    check = run_process(tmp_path, "check-config", str(path))
    assert check.returncode == 2
    assert "drain_within" in check.stderr


# --------------------------------------------------------------------------- config-schema


def test_config_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "config-schema")
    assert (code, err) == (0, "")
    schema = json.loads(out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"targets", "evaluation_interval"} <= set(schema["properties"])


def test_config_schema_process(tmp_path: Path) -> None:
    done = run_process(tmp_path, "config-schema")
    assert done.returncode == 0, done.stderr
    assert "$schema" in json.loads(done.stdout)


# --------------------------------------------------------------------------- plan


def test_plan_json_contract_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--users", "60000", "--peak-emails-per-hour", "50000",
                       "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["instances"] == 8
    assert isinstance(plan["instances"], int)
    for key in ("architecture", "storage", "cluster"):
        assert isinstance(plan[key], str) and plan[key], key


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--users", "60000", "--peak-emails-per-hour", "50000")
    assert code == 0
    rows = dict(line.split(None, 1) for line in out.splitlines()
                if line and not line.startswith(("-", "peak")))
    assert rows["instances"].strip() == "8"
    assert rows["users"].strip() == "60,000"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        pytest.param(["--users", "0"], "users", id="zero-users"),
        pytest.param(["--users", "-5"], "users", id="negative-users"),
        pytest.param(["--users", "10", "--peak-emails-per-hour", "-1"], "peak",
                     id="negative-peak"),
    ],
)
def test_plan_bad_numbers_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, out, err = run(capsys, "plan", *argv, "--json")
    assert (code, out) == (2, "")
    assert err.startswith("autoscaler: ")
    assert fragment in err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["plan", "--users", "many"], id="users-not-a-number"),
        pytest.param(["plan"], id="users-missing"),
        pytest.param(["simulate", "--baseline", "oracle"], id="unknown-baseline"),
        pytest.param([], id="no-command"),
        pytest.param(["frobnicate"], id="unknown-command"),
    ],
)
def test_argument_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_plan_zero_users_process(tmp_path: Path) -> None:
    done = run_process(tmp_path, "plan", "--users", "0")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "users" in done.stderr


# --------------------------------------------------------------------------- simulate


def test_simulate_bundled_newsletter_burst_writes_report_and_plot(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_json, png = tmp_path / "O.json", tmp_path / "P.png"
    code, out, err = run(capsys, "simulate", "--trace", "newsletter-burst", "--out",
                         str(out_json), "--plot", str(png))
    assert (code, err) == (0, ""), err
    assert f"wrote {out_json}" in out and f"wrote {png}" in out
    report = read_json(out_json)
    assert report["trace"] == "newsletter-burst"
    assert report["target"] == "smtp"
    timeline = report["timeline"]
    assert len(timeline) > 100
    for row in timeline:
        assert set(row) >= TIMELINE_KEYS, row
    assert [r["t"] for r in timeline] == sorted(r["t"] for r in timeline)
    assert all(2 <= r["replicas"] <= 20 for r in timeline), "within smtp's min/max"
    assert report["summary"]["contender"] == "profile"
    assert {"replica_hours", "overload_seconds"} <= set(report["summary"])
    assert [c["contender"] for c in report["comparison"]] == ["profile", "hpa-cpu", "static"]
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_simulate_static_baseline_holds_replicas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_json = tmp_path / "static.json"
    code, _, err = run(capsys, "simulate", "--trace", str(small_trace(tmp_path)), "--baseline",
                       "static", "--out", str(out_json), "--plot", "none")
    assert code == 0, err
    report = read_json(out_json)
    assert report["contender"] == "static"
    replicas = {row["replicas"] for row in report["timeline"]}
    # The guide's formula on the 50,000/h peak: ceil(50,000 / 10,000 x 1.5) = 8.
    assert replicas == {8}


def test_simulate_hpa_baseline_without_comparison(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_json = tmp_path / "hpa.json"
    code, out, err = run(capsys, "simulate", "--trace", str(small_trace(tmp_path)), "--baseline",
                         "hpa-cpu", "--no-compare", "--out", str(out_json), "--plot", "none")
    assert code == 0, err
    report = read_json(out_json)
    assert report["contender"] == "hpa-cpu"
    assert [c["contender"] for c in report["comparison"]] == ["hpa-cpu"]
    assert "static" not in out and "profile" not in out
    replicas = [row["replicas"] for row in report["timeline"]]
    assert max(replicas) > min(replicas), "the burst makes it scale"
    assert all(2 <= r <= 20 for r in replicas)


def test_simulate_target_and_default_plot_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace = small_trace(tmp_path, rows=60)
    code, out, err = run(capsys, "simulate", "--trace", str(trace), "--target", "imap",
                         "--no-compare")
    assert code == 0, err
    assert "target imap" in out
    assert (tmp_path / "simulate-small-imap.png").read_bytes()[:8] == PNG_MAGIC


def test_simulate_plot_none_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace = small_trace(tmp_path, rows=60)
    code, _, err = run(capsys, "simulate", "--trace", str(trace), "--no-compare", "--plot",
                       "none")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.csv"]


@pytest.mark.parametrize(
    ("argv", "code", "said_on"),
    [
        pytest.param(["simulate", "--trace", "small.csv", "--no-compare"], 0, "out",
                     id="simulate-default-plot: a note, still a success"),
        pytest.param(["simulate", "--trace", "small.csv", "--no-compare", "--plot", "p.png"], 1,
                     "err", id="simulate-named-plot: a failure"),
        pytest.param(["backtest", "--config", "unreachable.yaml", "--start=-1h", "--plot",
                      "p.png"], 1, "err", id="backtest-named-plot: a failure before any fetch"),
    ],
)
def test_without_matplotlib_plots_say_how_to_get_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    argv: list[str], code: int, said_on: str,
) -> None:
    """The daemon's install has no matplotlib (the `plot` extra): no ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    small_trace(tmp_path, rows=20)
    write(tmp_path, "unreachable.yaml", "prometheus: {url: 'http://127.0.0.1:9', timeout: 1s}\n"
          "targets: [{name: t, backend: swarm, service: s, min_replicas: 1, max_replicas: 2,\n"
          "           policies: [{type: capacity, query: 'vector(1)'}]}]\n")
    got, out, err = run(capsys, *argv)
    assert got == code, err
    said = out if said_on == "out" else err
    assert "pip install 'stalwart-autoscaler[plot]'" in said
    assert "Traceback" not in out + err
    assert not list(tmp_path.glob("*.png"))


NEGATIVE_LINE_4 = "t,demand\n0,100\n15,200\n30,-5\n45,100\n"


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        pytest.param(["--trace", "neg.csv"], ["line 4", "negative"], id="negative-demand"),
        pytest.param(["--trace", "small.csv", "--target", "pop3"],
                     ["no target named 'pop3'", "smtp, imap"], id="unknown-target"),
        pytest.param(["--trace", "no-such-trace"],
                     ["no-such-trace", *sorted(bundled_traces())], id="unknown-trace"),
        pytest.param(["--trace", "small.csv", "--config", "bad.yaml"],
                     ["bad.yaml:7: targets[0].min_replicas"], id="bad-config"),
        pytest.param(["--trace", "small.csv", "--config", "missing.yaml"],
                     ["missing.yaml", "cannot read"], id="missing-config"),
    ],
)
def test_simulate_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], fragments: list[str]
) -> None:
    write(tmp_path, "neg.csv", NEGATIVE_LINE_4)
    write(tmp_path, "bad.yaml", BAD_CONFIG)
    small_trace(tmp_path, rows=20)
    code, out, err = run(capsys, "simulate", *argv, "--plot", "none")
    assert (code, out) == (2, "")
    for fragment in fragments:
        assert fragment in err


def test_simulate_unwritable_out_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = write(tmp_path, "file", "not a directory\n")
    code, _, err = run(capsys, "simulate", "--trace", str(small_trace(tmp_path, rows=20)),
                       "--no-compare", "--out", str(blocker / "O.json"), "--plot", "none")
    assert code == 1
    assert "cannot write" in err


def test_simulate_bad_trace_process(tmp_path: Path) -> None:
    trace = write(tmp_path, "neg.csv", NEGATIVE_LINE_4)
    done = run_process(tmp_path, "simulate", "--trace", str(trace), "--plot", "none")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "line 4" in done.stderr
    assert not list(tmp_path.glob("*.png"))
