"""The operator's assets around the daemon: Prometheus alert rules, the example Prometheus
config, the Grafana dashboard, and docs/operations.md that explains them.

- `promtool check rules` accepts the rules and rejects broken copies of them;
- every alert fires when its condition holds for its `for` and not before, and stays quiet
  on healthy series (`promtool test rules`, Prometheus' own engine, from a table here);
- every metric a rule or a panel names is one the daemon exports (autoscaler.telemetry);
- every dashboard query is valid PromQL to the real Prometheus of the test environment;
- docs/operations.md explains every exported metric and has a runbook for every alert.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from autoscaler.telemetry import Telemetry
from tests.support.realenv import RealEnv

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yaml"
PROMETHEUS_EXAMPLE = REPO / "deploy" / "prometheus" / "prometheus-example.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "stalwart-autoscaler.json"
OPERATIONS = REPO / "docs" / "operations.md"
JOB = "stalwart-autoscaler"
PROMTOOL_TIMEOUT = 60.0

PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself for every scrape target

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).is_file():
        pytest.fail("promtool is missing: it ships in Debian's prometheus package, which "
                    "`scripts/testenv up` installs")
    return found


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT, check=False)


def rules() -> list[Doc]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> dict[str, Doc]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


# --------------------------------------------------------------------------- metric names


def exported_names() -> set[str]:
    """Series names the daemon's registry exposes: counters as _total, histograms as their
    _bucket, _sum and _count series."""
    names: set[str] = set()
    for family in Telemetry().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def family_names() -> set[str]:
    return {family.name for family in Telemetry().registry.collect()}


_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels excluded)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = _CLAUSE.sub(" ", text)  # label lists of by/on/...
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end():].lstrip().startswith("("):  # a function or an aggregation
            continue
        if match.group() in _KEYWORDS or re.fullmatch(r"by|without|on|ignoring|group_\w+",
                                                       match.group()):
            continue
        names.add(match.group())
    return names


@pytest.mark.parametrize(("expr", "names"), [
    ("up == 0", {"up"}),
    ('absent(up{job="x"} == 1)', {"up"}),
    ('sum by (job, target) (rate(a_total{x="y z"}[5m])) > 2', {"a_total"}),
    ("time() - last_tick > 120", {"last_tick"}),
    ('histogram_quantile(0.95, sum by (le) (rate(d_bucket{j=~"$job"}[$__rate_interval])))',
     {"d_bucket"}),
    ("a and on (job, instance) b or c unless d", {"a", "b", "c", "d"}),
    ("x > bool 1e3 offset 5m", {"x"}),
    ('max(a) by (target) * on(job) group_left(version) b{v="sum(fake)"}', {"a", "b"}),
    ("min_over_time(s[10m:1m])", {"s"}),
])
def test_metric_names_parser(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_registry_has_the_documented_families() -> None:
    """The reference the checks below compare with is not empty or half-built."""
    names = exported_names()
    assert {"autoscaler_decisions_total", "autoscaler_tick_duration_seconds_bucket",
            "autoscaler_target_desired_replicas", "autoscaler_leader"} <= names
    assert "autoscaler_decisions" not in names  # a counter is only ever seen as _total


# --------------------------------------------------------------------------- alert rules


REQUIRED_ALERTS = [
    "StalwartAutoscalerDown",
    "StalwartAutoscalerLoopStuck",
    "StalwartAutoscalerTargetPinnedAtMax",
    "StalwartAutoscalerRepeatedActuationFailures",
    "StalwartAutoscalerMetricSourceFailing",
    "StalwartAutoscalerConfigReloadFailed",
]


def test_promtool_accepts_the_rules(promtool: str) -> None:
    done = run_promtool(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_accepts_the_example_config(promtool: str) -> None:
    done = run_promtool(promtool, "check", "config", str(PROMETHEUS_EXAMPLE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout  # it loads alerts.yaml
    config = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == [JOB]


def _break_expr(text: str) -> str:
    return text.replace('absent(up{job="stalwart-autoscaler"} == 1)',
                        'absent(up{job="stalwart-autoscaler"} == )', 1)


def _duplicate_group(text: str) -> str:
    data = yaml.safe_load(text)
    data["groups"].append(data["groups"][0])
    return yaml.safe_dump(data)


@pytest.mark.parametrize(("breakage", "message"), [
    (_break_expr, "parse error"),
    (lambda t: t.replace("for: 5m", "for: 5 minutes", 1), "not a valid duration"),
    (lambda t: t.replace("expr:", "expression:", 1), "field expression not found"),
    (lambda t: t.replace("{{ $labels.instance }} is down", "{{ $labels.instance } is down", 1),
     "unexpected"),
    (_duplicate_group, "is repeated in the same file"),
], ids=["promql", "duration", "unknown-key", "template", "duplicate-group"])
def test_promtool_rejects_a_broken_copy(promtool: str, tmp_path: Path, breakage: Any,
                                        message: str) -> None:
    text = RULES.read_text()
    broken = breakage(text)
    assert broken != text  # the breakage applies to the current file
    copy = tmp_path / "alerts.yaml"
    copy.write_text(broken)
    done = run_promtool(promtool, "check", "rules", str(copy))
    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def test_rules_name_only_exported_metrics() -> None:
    exported = exported_names()
    used: set[str] = set()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["expr"]  # each rule reads something
        assert names - exported - PROMETHEUS_OWN == set(), rule.get("alert")
        used |= names
    assert len(used & exported) >= 8  # the check found real names, not nothing


def test_required_alerts_exist() -> None:
    assert set(REQUIRED_ALERTS) <= set(alerts())


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            title = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(title.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alert_is_documented(name: str) -> None:
    rule = alerts()[name]
    assert rule["labels"]["severity"] in ("critical", "warning")
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook", "runbook_url"}
    assert all(len(str(v)) > 20 for v in annotations.values())
    page, _, anchor = annotations["runbook_url"].partition("#")
    assert page == "docs/operations.md"
    assert anchor == name.lower()
    assert anchor in heading_anchors(OPERATIONS.read_text())


# --- alerts firing, through promtool's unit tests --------------------------------------------

_TEMPLATE = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def render_annotations(rule: Doc, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations for one alert: only `{{ $labels.x }}` is used in the rules."""
    out = {}
    for key, value in rule["annotations"].items():
        assert value.count("{{") == len(_TEMPLATE.findall(value)), value  # nothing else
        out[key] = _TEMPLATE.sub(lambda m: labels.get(m.group(1), ""), value)
    return out


def series(name: str, values: str, **labels: str) -> Doc:
    labels = {"job": JOB, **labels}
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


J = {"job": JOB}
A = {"job": JOB, "instance": "a:9464"}
B = {"job": JOB, "instance": "b:9464"}

# (id, input series, [(eval time, alert, [label sets of the alerts firing])])
ALERT_CASES: list[tuple[str, list[Doc], list[tuple[str, str, list[dict[str, str]]]]]] = [
    ("every copy down", [series("up", "0x15", instance="a:9464"),
                         series("up", "0x15", instance="b:9464")],
     [("4m", "StalwartAutoscalerDown", []),  # pending: not yet 5 minutes
      ("6m", "StalwartAutoscalerDown", [{}]),
      ("6m", "StalwartAutoscalerInstanceDown", [A, B])]),
    ("never scraped", [{"series": 'up{job="other"}', "values": "1x15"}],
     [("6m", "StalwartAutoscalerDown", [{}])]),
    ("one of two copies down", [series("up", "0x15", instance="a:9464"),
                                series("up", "1x15", instance="b:9464")],
     [("6m", "StalwartAutoscalerDown", []),
      ("6m", "StalwartAutoscalerInstanceDown", [A])]),
    ("a short blip", [series("up", "0 0 1x13", instance="a:9464")],
     [("6m", "StalwartAutoscalerInstanceDown", []), ("6m", "StalwartAutoscalerDown", [])]),
    ("loop stuck on one copy", [
        series("autoscaler_last_tick_timestamp_seconds", "60x15", instance="a:9464"),
        series("autoscaler_last_tick_timestamp_seconds", "0+60x15", instance="b:9464")],
     [("4m", "StalwartAutoscalerLoopStuck", []),
      ("6m", "StalwartAutoscalerLoopStuck", [A])]),
    ("no leader", [series("autoscaler_leader", "0x15", instance="a:9464"),
                   series("autoscaler_leader", "0x15", instance="b:9464")],
     [("6m", "StalwartAutoscalerNoLeader", [J]),
      ("6m", "StalwartAutoscalerSeveralLeaders", [])]),
    ("one leader", [series("autoscaler_leader", "1x15", instance="a:9464"),
                    series("autoscaler_leader", "0x15", instance="b:9464")],
     [("6m", "StalwartAutoscalerNoLeader", []),
      ("6m", "StalwartAutoscalerSeveralLeaders", [])]),
    ("two leaders", [series("autoscaler_leader", "1x15", instance="a:9464"),
                     series("autoscaler_leader", "1x15", instance="b:9464")],
     [("3m", "StalwartAutoscalerSeveralLeaders", [J])]),
    ("target pinned at max", [
        *(series("autoscaler_target_desired_replicas", "10x40", target="smtp", instance=i)
          for i in ("a:9464", "b:9464")),
        *(series("autoscaler_target_max_replicas", "10x40", target="smtp", instance=i)
          for i in ("a:9464", "b:9464")),
        series("autoscaler_target_desired_replicas", "3x40", target="imap", instance="a:9464"),
        series("autoscaler_target_max_replicas", "10x40", target="imap", instance="a:9464")],
     [("20m", "StalwartAutoscalerTargetPinnedAtMax", []),
      ("35m", "StalwartAutoscalerTargetPinnedAtMax", [{**J, "target": "smtp"}])]),
    ("actuation failures", [
        series("autoscaler_actuation_errors_total", "0+1x20", target="smtp", verb="scale",
               instance="a:9464"),
        series("autoscaler_actuation_errors_total", "0x5 1x5 2x10", target="imap",
               verb="status", instance="a:9464")],
     [("16m", "StalwartAutoscalerRepeatedActuationFailures",
       [{**J, "target": "smtp", "verb": "scale"}])]),
    ("signal stuck in error", [
        series("autoscaler_signal_state", "1x30", target="smtp", policy="inflow",
               state="error", instance="a:9464"),
        series("autoscaler_signal_state", "0x30", target="smtp", policy="inflow", state="ok",
               instance="a:9464"),
        series("autoscaler_query_errors_total", "0+4x30", target="smtp", state="error",
               instance="a:9464")],
     [("8m", "StalwartAutoscalerMetricSourceFailing", []),
      ("16m", "StalwartAutoscalerMetricSourceFailing",
       [{**J, "target": "smtp", "policy": "inflow", "state": "error"}]),
      ("16m", "StalwartAutoscalerMetricSourceFlapping", [])]),
    ("signal flapping", [
        series("autoscaler_signal_state", " ".join(["1 0"] * 15), target="smtp",
               policy="inflow", state="stale", instance="a:9464"),
        series("autoscaler_signal_state", " ".join(["0 1"] * 15), target="smtp",
               policy="inflow", state="ok", instance="a:9464"),
        series("autoscaler_query_errors_total", "0+3x30", target="smtp", state="stale",
               instance="a:9464")],
     [("16m", "StalwartAutoscalerMetricSourceFailing", []),
      ("16m", "StalwartAutoscalerMetricSourceFlapping", [{**J, "target": "smtp"}])]),
    ("one outage, recovered", [
        series("autoscaler_signal_state", "1x12 0x18", target="smtp", policy="inflow",
               state="error", instance="a:9464"),
        series("autoscaler_signal_state", "0x12 1x18", target="smtp", policy="inflow",
               state="ok", instance="a:9464"),
        series("autoscaler_query_errors_total", "0+4x12 48x18", target="smtp",
               state="error", instance="a:9464")],
     [("11m", "StalwartAutoscalerMetricSourceFailing",
       [{**J, "target": "smtp", "policy": "inflow", "state": "error"}]),
      ("16m", "StalwartAutoscalerMetricSourceFailing", []),
      ("16m", "StalwartAutoscalerMetricSourceFlapping", [])]),
    ("config reload rejected", [
        series("autoscaler_config_reload_failures_total", "0 0 0 1x40", instance="a:9464")],
     [("5m", "StalwartAutoscalerConfigReloadFailed", [A]),
      ("40m", "StalwartAutoscalerConfigReloadFailed", [])]),  # an hour later: forgotten
    ("a history that never loads", [
        series("autoscaler_policy_history_seconds", "0x80", target="smtp",
               policy="inflow_seasonal", instance="a:9464"),
        series("autoscaler_policy_history_seconds", "0x10 691200x70", target="imap",
               policy="imap_sessions_seasonal", instance="a:9464")],
     [("50m", "StalwartAutoscalerHistoryUnavailable", []),  # pending: not yet an hour
      ("65m", "StalwartAutoscalerHistoryUnavailable",
       [{**J, "target": "smtp", "policy": "inflow_seasonal"}])]),
    ("targets fail every tick", [
        series("autoscaler_last_successful_tick_timestamp_seconds", "60x30",
               instance="a:9464"),
        series("autoscaler_last_tick_timestamp_seconds", "0+60x30", instance="a:9464"),
        series("autoscaler_last_successful_tick_timestamp_seconds", "0+60x30",
               instance="b:9464"),
        series("autoscaler_last_tick_timestamp_seconds", "0+60x30", instance="b:9464")],
     [("18m", "StalwartAutoscalerTicksIncomplete", []),
      ("25m", "StalwartAutoscalerTicksIncomplete", [A])]),
]


@pytest.mark.parametrize(("input_series", "checks"), [(s, c) for _, s, c in ALERT_CASES],
                         ids=[i for i, _, _ in ALERT_CASES])
def test_alert_fires_when_it_should(promtool: str, tmp_path: Path, input_series: list[Doc],
                                    checks: list[tuple[str, str, list[dict[str, str]]]]) -> None:
    known = alerts()
    tests = []
    for eval_time, name, firing in checks:
        rule = known[name]
        expected = []
        for labels in firing:
            all_labels = {**labels, **rule["labels"]}
            expected.append({"exp_labels": all_labels,
                             "exp_annotations": render_annotations(rule, all_labels)})
        tests.append({"eval_time": eval_time, "alertname": name, "exp_alerts": expected})
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [str(RULES)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series,
                   "alert_rule_test": tests}]}))
    done = run_promtool(promtool, "test", "rules", str(test_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_case() -> None:
    fired = {name for _, _, checks in ALERT_CASES for _, name, firing in checks if firing}
    assert fired == set(alerts())


# --------------------------------------------------------------------------- dashboard


def dashboard() -> Doc:
    data: Doc = json.loads(DASHBOARD.read_text())
    return data


def panels(board: Doc) -> list[Doc]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return out


def queries(board: Doc) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
            assert match, text
            exprs.append(match.group(1))
    return exprs


def substitute(expr: str) -> str:
    """Grafana's variables → values Prometheus accepts."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["uid"] == "stalwart-autoscaler" and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "target"} <= set(variables)
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    graphs = [p for p in panels(board) if p["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
        assert panel.get("description"), panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_names_only_exported_metrics() -> None:
    exported = exported_names()
    for expr in queries(dashboard()):
        names = metric_names(expr)
        assert names, expr
        assert names - exported == set(), expr


@pytest.mark.parametrize("metric", [
    "autoscaler_target_desired_replicas",
    "autoscaler_target_current_replicas",
    "autoscaler_target_ready_replicas",
    "autoscaler_decisions_total",
    "autoscaler_clips_total",
    "autoscaler_query_errors_total",
    "autoscaler_actuation_errors_total",
    "autoscaler_query_duration_seconds_bucket",
    "autoscaler_actuation_duration_seconds_bucket",
    "autoscaler_tick_duration_seconds_bucket",
    "autoscaler_leader",
    "autoscaler_policy_forecast",
])
def test_dashboard_shows(metric: str) -> None:
    assert any(metric in metric_names(expr) for expr in queries(dashboard()))


def test_dashboard_has_a_forecast_vs_actual_panel() -> None:
    """seasonal's forecast beside the actual value, both series the daemon exports."""
    [panel] = [p for p in panels(dashboard()) if p["title"].startswith("Forecast vs actual")]
    named = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
    assert {"autoscaler_policy_forecast", "autoscaler_policy_value"} <= named
    assert named <= exported_names()


def test_dashboard_queries_are_valid_promql(realenv: RealEnv) -> None:
    """Every query, variables substituted, is accepted by the real Prometheus."""
    session = requests.Session()
    session.trust_env = False  # 127.0.0.1 only, never through a proxy
    with session:
        for expr in queries(dashboard()):
            response = session.get(f"{realenv.prometheus_url}/api/v1/query",
                                   params={"query": substitute(expr)}, timeout=10)
            body = response.json()
            assert response.status_code == 200 and body["status"] == "success", \
                (expr, body.get("error"))


def test_a_broken_query_is_caught(realenv: RealEnv) -> None:
    """The check above can fail: Prometheus rejects what a typo makes."""
    broken = "sum by (target) (rate(autoscaler_decisions_total[$__rate_interval])"
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(f"{realenv.prometheus_url}/api/v1/query",
                               params={"query": substitute(broken)}, timeout=10)
    assert response.status_code == 400
    assert response.json()["errorType"] == "bad_data"


# --------------------------------------------------------------------------- operations guide


@pytest.mark.parametrize("family", sorted(family_names()))
def test_operations_guide_explains_every_metric(family: str) -> None:
    text = OPERATIONS.read_text()
    documented = {family + "_total"} if family in {
        f.name for f in Telemetry().registry.collect() if f.type == "counter"} else {family}
    assert any(f"`{name}`" in text for name in documented), family


def test_operations_guide_links_resolve() -> None:
    text = OPERATIONS.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 5  # the guide links the deploy assets
    missing = [link for link in local if not (OPERATIONS.parent / link).exists()]
    assert missing == [], f"docs/operations.md links to paths that do not exist: {missing}"
