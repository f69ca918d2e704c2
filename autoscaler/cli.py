"""The `autoscaler` command.

Only argparse is imported at start-up; each subcommand imports what it needs, so `--help`
answers at once and the Kubernetes client's 40 MB are paid only by targets that use it.
Exit codes: 0 success, 1 a failure while running, 2 bad input (config, trace, arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_TRACE = "newsletter-burst"
PLOT_EXTRA = "pip install 'stalwart-autoscaler[plot]'"


def bundled_config_path() -> Path:
    return Path(str(files("autoscaler") / "data" / "stalwart-example.yaml"))


def _err(message: str) -> None:
    print(f"autoscaler: {message}", file=sys.stderr)


def _load(path: str | Path) -> Any:
    """Settings from a file, or None after printing every problem."""
    from autoscaler.config import ConfigError, load_config
    from autoscaler.registry import RegistryError

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} problem(s):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None
    except RegistryError as exc:
        _err(str(exc))
        return None


def _warn_security(settings: Any, path: str | Path | None, emit: Any) -> None:
    """Each security warning through `emit` (a logger's warning, or a line on stderr). With
    TLS verification knowingly off, urllib3's own per-request warning is silenced: ours
    said it once, in the log's format."""
    from autoscaler.config import security_warnings

    for warning in security_warnings(settings, path):
        emit(warning)
    if not settings.prometheus.verify_tls:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def plotting_missing() -> str | None:
    """Why no PNG can be drawn (matplotlib is the optional `plot` extra), or None.

    The daemon's install (systemd, the image) leaves matplotlib out: about 170 MB that only
    `simulate` and `backtest --plot` use.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed (plots are the optional extra: {PLOT_EXTRA})"
    return None


def cmd_check_config(args: argparse.Namespace) -> int:
    import yaml

    from autoscaler.config import dump_json, redacted_dump

    settings = _load(args.file)
    if settings is None:
        return EXIT_BAD_INPUT
    _warn_security(settings, args.file, lambda w: _err(f"warning: {w}"))
    dumped = redacted_dump(settings)
    if args.json and not args.expand:  # the config itself: valid against config-schema
        print(dump_json(dumped))
        return EXIT_OK
    for target, shown in zip(settings.targets, dumped["targets"], strict=True):
        shown["effective"] = target.expansion()
    if args.json:
        print(dump_json(dumped))
    else:
        print(f"# {args.file}: valid. Effective configuration "
              "(defaults filled, environment applied; under each target, `effective` is "
              "what it runs on: the preset's policies and guards, then the explicit ones):")
        print(yaml.safe_dump(dumped, sort_keys=False, width=10**6), end="")
    return EXIT_OK


def _read_manifests(path: str) -> list[Any] | str:
    """The YAML documents of `path`, or why they cannot be read (file and line)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return f"{path}: cannot read: {reason or exc}"
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        return f"{where}: not YAML: {getattr(exc, 'problem', None) or exc}"
    except RecursionError:
        return f"{path}: not YAML: nested too deeply"


def cmd_import(args: argparse.Namespace) -> int:
    """An HPA or KEDA ScaledObject manifest as a config on stdout; what has no equivalent is
    listed at its top (and counted on stderr)."""
    import yaml

    from autoscaler.config import ConfigError, load_config_data
    from autoscaler.importer import ManifestError, import_documents

    documents = _read_manifests(args.file)
    if isinstance(documents, str):
        _err(documents)
        return EXIT_BAD_INPUT
    try:
        imported = import_documents(documents)
    except ManifestError as exc:
        _err(f"{args.file}: {exc}")
        return EXIT_BAD_INPUT
    try:
        load_config_data(imported.config, source=f"import of {args.file}", environ={})
    except ConfigError as exc:  # a converter bug, or numbers out of range in the manifest
        _err(f"{args.file}: the converted config is not valid:")
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_BAD_INPUT
    lines = [f"# Converted by `autoscaler import {args.file}` from:"]
    lines += [f"#   {where}" for where in imported.sources]
    lines += ["# dry_run is on: compare its decisions (`autoscaler explain`, the decision log)",
              "# with the HPA's, then delete the HPA or ScaledObject (the daemon never writes a",
              "# workload an HPA targets) and set dry_run: false. Resource utilization reads",
              "# cAdvisor and kube-state-metrics (kube_pod_container_resource_requests)."]
    if imported.not_converted:
        lines.append("# Not converted:")
        lines += [f"#   - {note}" for note in imported.not_converted]
    print("\n".join(lines))
    print(yaml.safe_dump(imported.config, sort_keys=False), end="")
    if imported.not_converted:
        _err(f"{len(imported.not_converted)} item(s) not converted: listed at the top")
    return EXIT_OK


def cmd_config_schema(args: argparse.Namespace) -> int:
    from autoscaler.config import config_schema

    print(json.dumps(config_schema(), indent=2))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from autoscaler.plan import make_plan

    try:
        plan = make_plan(args.users, args.peak_emails_per_hour)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return EXIT_OK
    rows = [
        ("users", f"{plan.users:,}"),
        ("peak emails/hour", f"{plan.peak_emails_per_hour:,}"
         + (" (estimated)" if plan.peak_estimated else "")),
        ("matrix row", f"{plan.row} users (the matrix says {plan.matrix_instances} "
                       "instances)"),
        ("architecture", plan.architecture),
        ("storage", plan.storage),
        ("cluster", plan.cluster),
        ("instances", str(plan.instances)),
        ("formula", plan.formula),
        ("coordinator", plan.coordinator),
        ("hardware", plan.hardware),
        *(("needs", service) for service in plan.shared_services),
        *((("protocols", plan.protocol_separation),) if plan.protocol_separation else ()),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for note in plan.notes:
        print(f"- {note}")
    return EXIT_OK


def _summary_table(summaries: Sequence[dict[str, Any]]) -> str:
    columns = [
        ("contender", "contender", "{}"),
        ("overload s", "overload_seconds", "{:.0f}"),
        ("peak queue", "peak_queue", "{:.0f}"),
        ("worst delay s", "worst_queue_delay_seconds", "{:.0f}"),
        ("replica-h", "replica_hours", "{:.1f}"),
        ("scale events", "scale_events", "{}"),
        ("peak replicas", "peak_replicas", "{}"),
    ]
    cells = [[head for head, _, _ in columns]]
    for s in summaries:
        cells.append([
            "inf" if s.get(key) is None else fmt.format(s[key]) for _, key, fmt in columns
        ])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_simulate(args: argparse.Namespace) -> int:
    from autoscaler.replay.simulate import run_simulation, simulation_report
    from autoscaler.trace import TraceError, load_trace, resolve_trace

    config_path = args.config or bundled_config_path()
    settings = _load(config_path)
    if settings is None:
        return EXIT_BAD_INPUT
    try:
        target = settings.target(args.target)
    except KeyError as exc:
        _err(str(exc.args[0]))
        return EXIT_BAD_INPUT
    try:
        trace = load_trace(resolve_trace(args.trace))
    except TraceError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    results = run_simulation(settings, target, trace, baseline=args.baseline,
                             compare=args.compare)
    main = results[0]
    print(f"trace {trace.name}: {trace.duration / 3600:.1f} h, peak {trace.peak:,.0f} emails/h; "
          f"target {target.name} ({config_path}); plant: "
          f"{settings.simulation.capacity_per_instance:,.0f} emails/h per instance, "
          f"start-up {settings.simulation.startup_delay:g}s, "
          f"scrape {settings.simulation.scrape_interval:g}s")
    print(_summary_table([r.summary for r in results]))
    if main.not_simulated:
        print(f"not simulated (no plant signal; set simulate_as): {', '.join(main.not_simulated)}")
    report = simulation_report(results, trace, target, settings)
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report) + "\n", encoding="utf-8")
        except OSError as exc:
            _err(f"cannot write {out}: {exc.strerror or exc}")
            return EXIT_FAILURE
        print(f"wrote {out}")
    if args.plot != "none" and (missing := plotting_missing()) is not None:
        if args.plot:  # asked for by name: a failure
            _err(f"cannot write {args.plot}: {missing}")
            return EXIT_FAILURE
        print(f"no plot: {missing}; --plot none skips this note")
    elif args.plot != "none":
        from autoscaler.plot import plot_simulation

        plot_path = Path(args.plot or f"simulate-{trace.name}-{target.name}.png")
        try:
            plot_simulation(results, plot_path,
                            f"{trace.name}: target {target.name}, {main.contender}")
        except OSError as exc:
            _err(f"cannot write {plot_path}: {exc.strerror or exc}")
            return EXIT_FAILURE
        print(f"wrote {plot_path}")
    return EXIT_OK


class StartError(Exception):
    """The daemon cannot start as configured (e.g. its leader election cannot reach Docker)."""


def _engine(settings: Any, *, dry_run: bool, everything_dry: bool,
            one_shot_timeout: float | None = None) -> Any:
    """An Engine on the real Prometheus and backends; with `everything_dry` no write is
    possible at all (explain). A one-shot command passes its own `one_shot_timeout`: the
    tick's budget is then that, never the whole evaluation interval. Raises StartError."""
    from autoscaler.actuators.base import ActuatorError
    from autoscaler.actuators.factory import BackendClients, make_actuator
    from autoscaler.leader import LeaseLeader, NoElection, NotACandidate, SwarmLeader
    from autoscaler.loop import Engine
    from autoscaler.sources.prometheus import PrometheusSource
    from autoscaler.sources.stalwart_api import RoutedSource
    from autoscaler.telemetry import Health, Telemetry
    from autoscaler.write import is_dry_run

    # A backend call must end inside the tick (budget: max(interval, timeout + 1)).
    budget = (one_shot_timeout if one_shot_timeout is not None
              else max(settings.evaluation_interval, settings.prometheus.timeout + 1.0))
    clients = BackendClients(timeout=min(10.0, max(1.0, budget - 1.0)))
    dry_run = dry_run or everything_dry
    never_writes = all(is_dry_run(dry_run, settings, t) for t in settings.targets)

    def factory(target: Any) -> Any:
        return make_actuator(target, clients)  # the engine wraps it for dry-run targets

    mode = settings.leader_election.mode
    if one_shot_timeout is not None and never_writes:
        # One evaluation that cannot write: who would be leader changes nothing it shows.
        leadership: Any = NotACandidate("one-shot dry run: no leader needed")
    elif mode == "swarm":
        try:
            leadership = SwarmLeader(clients.docker())
        except ActuatorError as exc:
            raise StartError(f"leader_election.mode swarm: {exc}") from exc
    elif mode == "kubernetes" and never_writes:
        leadership = NotACandidate("dry-run: not a candidate for the Lease")
    elif mode == "kubernetes":
        leadership = LeaseLeader.from_config(settings.leader_election).start()
    else:
        leadership = NoElection()
    telemetry = Telemetry()
    health = Health(settings.evaluation_interval)
    # A one-shot command waits for a seasonal history within its own deadline (the daemon's
    # ticks never wait: "history loading" until the load in the source's own thread is in).
    source = PrometheusSource(settings.prometheus,
                              wait_for_history=one_shot_timeout is not None)
    if settings.prometheus.query_offset == "auto":
        # Learn the backend's query offset before the first tick (the probe of every tick
        # keeps it current): VictoriaMetrics' first readings would be stale or empty.
        import time

        problem = source.check_reachable(time.monotonic() + min(budget,
                                                                settings.prometheus.timeout))
        if problem is not None:
            import logging

            logging.getLogger("autoscaler").warning("at start: %s", problem)
    return Engine(settings, source=RoutedSource(source),
                  actuator_factory=factory, telemetry=telemetry, health=health,
                  leadership=leadership, dry_run=dry_run,
                  before_tick=clients.begin_tick, tick_budget=one_shot_timeout)


def _tick_failed(outcomes: Any, engine: Any) -> bool:
    """A one-shot tick failed when a target could not be evaluated or Prometheus was not
    reachable (every signal then reads `error`)."""
    return any(o.error for o in outcomes) or bool(engine.health.problems)


def cmd_run(args: argparse.Namespace) -> int:
    from autoscaler import __version__
    from autoscaler.logs import setup_logging

    settings = _load(args.config)
    if settings is None:
        return EXIT_BAD_INPUT
    setup_logging(args.log_level or settings.log_level)  # the flag wins over log_level
    import logging

    _warn_security(settings, args.config, logging.getLogger("autoscaler").warning)
    try:
        engine = _engine(settings, dry_run=args.dry_run, everything_dry=False,
                         one_shot_timeout=args.timeout if args.once else None)
    except NotImplementedError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except StartError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    engine.telemetry.info.labels(__version__).set(1)
    if args.once:
        try:
            outcomes = engine.tick()
        finally:
            engine.close()
        return EXIT_FAILURE if _tick_failed(outcomes, engine) else EXIT_OK
    return _serve(engine, settings, args.config, args.log_level)


def _on_signals() -> tuple[threading.Event, threading.Event, threading.Event]:
    """SIGTERM/SIGINT set `stop`, SIGHUP sets `hangup`; both set `wake` (the loop's sleep)."""
    import signal

    from autoscaler import sdnotify

    stop, wake, hangup = threading.Event(), threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            sdnotify.stopping()
        stop.set()
        wake.set()

    def on_hangup(signum: int, _frame: Any) -> None:
        hangup.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    return stop, wake, hangup


def _serve(engine: Any, settings: Any, config_path: str, log_level_flag: str | None) -> int:
    """The daemon: metrics and health served, ticks until SIGTERM/SIGINT, SIGHUP reloads."""
    import logging

    from autoscaler.logs import setup_logging
    from autoscaler.scheduler import run_forever
    from autoscaler.telemetry import TelemetryServer

    try:
        server = TelemetryServer(settings.listen, engine.telemetry, engine.health)
    except OSError as exc:
        _err(f"cannot listen on {settings.listen}: {exc.strerror or exc}")
        engine.close()
        return EXIT_FAILURE
    server.start()
    from autoscaler import sdnotify
    from autoscaler.loop import reload_config

    log = logging.getLogger("autoscaler")
    stop, wake, hangup = _on_signals()

    def check_watchdog() -> None:
        problem = sdnotify.watchdog_problem(sdnotify.watchdog_interval(), engine.tick_budget())
        if problem:
            log.warning("%s", problem)

    def describe() -> str:
        s = engine.settings
        return f"{len(s.targets)} target(s), every {s.evaluation_interval:g}s"

    def on_wake() -> float:
        """SIGHUP: re-read the file between two ticks; systemd sees RELOADING=1 ... READY=1."""
        if hangup.is_set():
            hangup.clear()
            sdnotify.reloading()
            ok = reload_config(engine, config_path)
            if ok and not log_level_flag:  # the flag wins over the file's log_level
                setup_logging(engine.settings.log_level)
            check_watchdog()
            sdnotify.ready(describe() if ok else f"{describe()}; last reload REJECTED")
        return float(engine.settings.evaluation_interval)

    def on_tick(_outcomes: list[Any]) -> None:
        problems = sorted(engine.health.ready()[1]["problems"])
        sdnotify.watchdog(f"{describe()}; last tick: "
                          + (f"problems with {', '.join(problems)}" if problems else "ok"))

    log.info("started: %d target(s), every %gs, metrics on http://%s/metrics",
             len(settings.targets), settings.evaluation_interval, server.address)
    check_watchdog()
    sdnotify.ready(describe())
    try:
        run_forever(engine, settings.evaluation_interval, stop, wake=wake, on_wake=on_wake,
                    on_tick=on_tick)
    finally:
        server.stop()
        engine.close()
        log.info("stopped")
    return EXIT_OK


def _explain_text(outcome: Any, runtime: Any) -> str:
    lines = []
    d = outcome.decision
    head = f"target {outcome.target} ({runtime.config.backend})"
    if d is None:
        return f"{head}: ERROR {outcome.error}"
    ready = "?" if d.ready is None else d.ready
    lines.append(f"{head}: current {d.current}, ready {ready} -> desired {d.desired} "
                 f"({d.outcome}); bounds [{runtime.config.min_replicas}, "
                 f"{runtime.config.max_replicas}]; winner {d.winner or '-'}")
    rows = [("policy", "state", "value", "replicas", "reason")]
    for p in d.policies:
        rows.append((p.name, str(p.state), "-" if p.value is None else f"{p.value:.4g}",
                     "-" if p.replicas is None else str(p.replicas), p.reason))
    for g in d.guards:
        rows.append((f"guard {g.name}", str(g.state),
                     "-" if g.value is None else f"{g.value:.4g}",
                     "veto" if g.active else "-", g.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True))
                     + "  " + r[4])
    for c in d.clips:
        lines.append(f"  clip {c.kind}: {c.before} -> {c.after} ({c.reason})")
    if d.released:
        lines.append(f"  released: {d.released}")
    if outcome.error:
        lines.append(f"  error: {outcome.error}")
    return "\n".join(lines)


def _cpu_basis_notes(settings: Any, timeout: float) -> dict[str, list[str]]:
    """Per target, what its preset's default CPU reading is relative to, when it is not
    the container's CPU limit (or request): never silently per core. One instant query per
    target, within `timeout` seconds."""
    import time as _time

    from autoscaler.model import SignalRequest, SignalState
    from autoscaler.presets import cpu_per_core_query
    from autoscaler.sources.prometheus import PrometheusSource

    asks = {t.name: (t.backend, cpu_per_core_query(t.preset_scope()))
            for t in settings.targets if t.preset is not None and not t.preset_options.cpu_query}
    if not asks:
        return {}
    with PrometheusSource(settings.prometheus) as source:
        read = source.read([SignalRequest(name, query, 0.0) for name, (_, query) in asks.items()],
                           _time.time(), _time.monotonic() + timeout)
    notes: dict[str, list[str]] = {}
    for name, (backend, _) in asks.items():
        signal = read.get(name)
        if signal is None or signal.state != SignalState.OK:
            detail = signal.detail if signal is not None else "no answer"
            notes[name] = [f"cpu basis unknown (cAdvisor's CPU limit series unreadable: "
                           f"{signal.state if signal else 'error'} {detail}".rstrip() + ")"]
        elif (signal.latest or 0.0) > 0:
            count = int(signal.latest or 0)
            without = ("no CPU limit and no request" if backend == "kubernetes" else
                       "no CPU limit (a Swarm reservation is not visible in cAdvisor; set "
                       "resources.limits.cpus)")
            notes[name] = [f"cpu reads PER CORE for {count} container(s) with {without}: "
                           "100 % there is one core busy, not the container's share"]
    return notes


def cmd_explain(args: argparse.Namespace) -> int:
    from autoscaler.logs import setup_logging

    settings = _load(args.config)
    if settings is None:
        return EXIT_BAD_INPUT
    setup_logging(args.log_level or "WARNING")  # the table is the output: only problems
    import logging

    _warn_security(settings, args.config, logging.getLogger("autoscaler").warning)
    try:
        engine = _engine(settings, dry_run=True, everything_dry=True,
                         one_shot_timeout=args.timeout)
    except NotImplementedError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except StartError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    import time as _time

    started = _time.monotonic()
    try:
        outcomes = engine.tick()
    finally:
        engine.close()
    # Within what is left of the one-shot deadline (at least a second for the notes).
    left = max(1.0, args.timeout - (_time.monotonic() - started))
    notes = _cpu_basis_notes(settings, min(left, settings.prometheus.timeout))
    if args.json:
        print(json.dumps([{"target": o.target, "error": o.error,
                           "decision": o.decision.to_dict() if o.decision else None,
                           "notes": notes.get(o.target, [])}
                          for o in outcomes], indent=2))
    else:
        by_name = {rt.name: rt for rt in engine.runtimes}
        print("\n\n".join(
            "\n".join([_explain_text(o, by_name[o.target]),
                       *(f"  note: {n}" for n in notes.get(o.target, []))])
            for o in outcomes))
    return EXIT_FAILURE if _tick_failed(outcomes, engine) else EXIT_OK


def cmd_backtest(args: argparse.Namespace) -> int:
    import time as _time

    from autoscaler.replay.backtest import (
        BacktestError,
        parse_time,
        plot_backtest,
        run_backtest,
        summary_lines,
    )
    from autoscaler.sources.prometheus import PrometheusSource

    settings = _load(args.config)
    if settings is None:
        return EXIT_BAD_INPUT
    try:
        target = settings.target(args.target)
        now = _time.time()
        start, end = parse_time(args.start, now), parse_time(args.end, now)
    except KeyError as exc:
        _err(str(exc.args[0]))
        return EXIT_BAD_INPUT
    except BacktestError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.plot and args.plot != "none" and (missing := plotting_missing()) is not None:
        _err(f"cannot write {args.plot}: {missing}")  # said before a long fetch, not after
        return EXIT_FAILURE
    with PrometheusSource(settings.prometheus) as source:
        try:
            result = run_backtest(settings, target, start, end, args.initial_replicas, source)
        except BacktestError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
    print("\n".join(summary_lines(result)))
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"summary": result.summary, "events": result.events,
                                       "timeline": result.timeline}) + "\n", encoding="utf-8")
        except OSError as exc:
            _err(f"cannot write {out}: {exc.strerror or exc}")
            return EXIT_FAILURE
        print(f"wrote {out}")
    if args.plot and args.plot != "none":
        try:
            plot_backtest(result, Path(args.plot))
        except OSError as exc:
            _err(f"cannot write {args.plot}: {exc.strerror or exc}")
            return EXIT_FAILURE
        print(f"wrote {args.plot}")
    return EXIT_FAILURE if not result.timeline or all(
        all(st != "ok" for st in r["states"].values()) for r in result.timeline) else EXIT_OK


ONE_SHOT_TIMEOUT = 10.0


def _positive_seconds(text: str) -> float:
    """argparse type: a duration (`10`, `10s`, `1m`) greater than zero."""
    from autoscaler.units import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return seconds


def _timeout_argument(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=ONE_SHOT_TIMEOUT, metavar="DURATION",
        help=f"{prefix}the whole evaluation's deadline, e.g. 10s (default "
             f"{ONE_SHOT_TIMEOUT:g}s): a one-shot never waits the evaluation interval")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                        help=f"{', '.join(LOG_LEVELS)} (any case); {default}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscaler",
        description="Autoscaling control loop for Stalwart Mail Server clusters "
                    "(Docker Swarm and Kubernetes).",
    )
    from autoscaler import __version__

    parser.add_argument("--version", action="version", version=f"autoscaler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the control loop")
    p.add_argument("--config", required=True, help="YAML or TOML config file")
    p.add_argument("--dry-run", action="store_true",
                   help="read and decide everything, write nothing")
    p.add_argument("--once", action="store_true", help="one tick, then exit")
    _timeout_argument(p, "with --once: ")
    _log_level_argument(p, "default: the config's log_level (INFO)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("explain", help="one evaluation now, a table per target; writes nothing")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true")
    _timeout_argument(p, "")
    _log_level_argument(p, "default WARNING")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("check-config", help="validate a config file and print it effective")
    p.add_argument("file", help="YAML or TOML config file")
    p.add_argument("--json", action="store_true",
                   help="print the effective config as JSON (valid against config-schema)")
    p.add_argument("--expand", action="store_true",
                   help="with --json: add each target's `effective` policies, guards and "
                        "selectors (the text output always shows them)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("config-schema", help="print the JSON Schema of the config file")
    p.set_defaults(func=cmd_config_schema)

    p = sub.add_parser("simulate", help="replay a demand trace through a simulated cluster")
    p.add_argument("--config", help="config file (default: the bundled Stalwart example)")
    p.add_argument("--trace", default=DEFAULT_TRACE,
                   help="CSV with columns t,demand or a bundled trace name "
                        "(diurnal-week, newsletter-burst, slow-ramp, noisy-flat); "
                        f"default {DEFAULT_TRACE}")
    p.add_argument("--target", help="target name (default: the first)")
    p.add_argument("--baseline", choices=["hpa-cpu", "static"],
                   help="replace the target's policies with a baseline")
    p.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the other contenders on the same plant (default on)")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--plot", help="PNG path (default simulate-TRACE-TARGET.png; 'none' to skip)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("backtest", help="replay Prometheus history through the engine")
    p.add_argument("--config", required=True)
    p.add_argument("--start", required=True,
                   help="now, -6h (write --start=-6h), epoch seconds or ISO 8601")
    p.add_argument("--end", default="now", help="as --start (default now)")
    p.add_argument("--target", help="target name (default: the first)")
    p.add_argument("--initial-replicas", type=int, help="default: min_replicas")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--plot", help="write a PNG here")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("import", help="convert a HorizontalPodAutoscaler or KEDA ScaledObject "
                                      "manifest into a config (on stdout)")
    p.add_argument("file", help="YAML manifest(s): HPA autoscaling/v2, v2beta2 or v1; KEDA "
                                "ScaledObject keda.sh/v1alpha1")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("plan", help="size a Stalwart deployment from its users and mail volume")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--peak-emails-per-hour", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
