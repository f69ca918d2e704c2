"""The configuration: pydantic(-settings) models, validated once at load.

Files are YAML or TOML; `AUTOSCALER_`-prefixed environment variables (`__` for nesting)
override them. Loading reports EVERY problem at once — type errors, unknown keys and the
cross-field rules (min <= max, lower bound < upper bound, ...) even when a sibling key is
also wrong — each with its key path and where the value came from (file and line, or the
environment variable).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from autoscaler.behavior import Behavior
from autoscaler.decide import TargetRules
from autoscaler.model import GuardBlock
from autoscaler.presets import Preset, PresetOptions, preset_guards, preset_policies
from autoscaler.registry import policy_types
from autoscaler.units import Duration
from policies import Policy
from policies.base import PlantSignal

ENV_PREFIX = "AUTOSCALER_"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$"
# Kubernetes keeps replicas in an int32; a larger count could not be written anywhere, and
# 10**400 would not even fit the float of a metric.
MAX_REPLICAS = 2**31 - 1


class Strict(BaseModel):
    """Unknown keys are errors; cross-field rules live in `cross_field_errors`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        """The rules that involve several keys of this block."""
        return []

    def cross_field_errors(self) -> list[tuple[str, str]]:
        """(key, message) per broken rule; a rule whose keys are themselves invalid is skipped
        (their own errors are reported already)."""
        found: list[tuple[str, str]] = []
        for rule in self.cross_field_rules():
            try:
                found.extend(rule())
            except (AttributeError, TypeError, KeyError, ValueError):
                continue
        return found


class BasicAuth(Strict):
    username: str = Field(..., min_length=1)
    password_file: Path = Field(..., description="file holding the password (not the password)")


class PrometheusConfig(Strict):
    url: str = Field("http://127.0.0.1:9090", description="base URL of the Prometheus HTTP API")
    timeout: Duration = Field(5.0, description="per query; retries stay within the tick")
    bearer_token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    ca_file: Path | None = None
    verify_tls: bool = True
    scrape_interval: Duration = Field(
        15.0, description="Prometheus' scrape interval: a newest sample older than two is stale"
    )
    max_concurrent_queries: int = Field(8, ge=1, le=256, description="queries in flight at once")
    group_by_label: str | None = Field(
        None,
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="send the targets' queries that differ only in this label's value "
        '(`label="value"`) as one query per tick, split by the label; default: one query each',
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")) or len(url) < 10:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url.rstrip("/")

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        return [self.one_auth_method, self.positive_timeout]

    def one_auth_method(self) -> list[tuple[str, str]]:
        if self.bearer_token_file is not None and self.basic_auth is not None:
            return [("bearer_token_file", "use bearer_token_file or basic_auth, not both")]
        if "@" in self.url.partition("://")[2].split("/")[0] and (
                self.bearer_token_file is not None or self.basic_auth is not None):
            # requests would send the URL's user:password and silently drop the other one
            return [("url", "credentials in the URL cannot be combined with "
                            "bearer_token_file or basic_auth")]
        return []

    def positive_timeout(self) -> list[tuple[str, str]]:
        return [("timeout", "timeout must be above 0")] if self.timeout <= 0 else []


class LeaderElectionConfig(Strict):
    mode: Literal["none", "swarm", "kubernetes"] = "none"
    lease_name: str = "stalwart-autoscaler"
    lease_namespace: str | None = Field(None, description="default: the pod's own namespace")
    lease_duration: Duration = 15.0
    renew_deadline: Duration = 10.0
    retry_period: Duration = 2.0

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        return [self.lease_timing]

    def lease_timing(self) -> list[tuple[str, str]]:
        """retry_period < renew_deadline < lease_duration, as client-go requires."""
        errors = []
        if self.renew_deadline >= self.lease_duration:
            errors.append(("renew_deadline", "renew_deadline must be below lease_duration"))
        if self.retry_period >= self.renew_deadline:
            errors.append(("retry_period", "retry_period must be below renew_deadline"))
        return errors


class Cooldown(Strict):
    up: Duration = Field(60.0, description="after a scale, before the next scale-up")
    down: Duration = Field(300.0, description="after a scale, before the next scale-down")


class GuardConfig(Strict):
    """A PromQL condition that vetoes a scale-down (or a scale-up) while it holds."""

    name: str | None = None
    query: str = Field(..., min_length=1)
    block: GuardBlock = GuardBlock.SCALE_DOWN
    above: float | None = None
    below: float | None = None
    simulate_as: PlantSignal | None = None

    @property
    def label(self) -> str:
        return self.name or f"guard:{self.query[:40]}"

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        return [self.has_bound]

    def has_bound(self) -> list[tuple[str, str]]:
        if self.above is None and self.below is None:
            return [("above", "a guard needs `above`, `below` or both")]
        return []


def _policy_union() -> Any:
    types = tuple(policy_types().values())
    if len(types) == 1:
        return types[0]
    return Annotated[Union[types], Field(discriminator="type")]  # noqa: UP007


PolicySpec = _policy_union()


class TargetConfig(Strict):
    name: str = Field(..., pattern=NAME_PATTERN)
    backend: Literal["swarm", "kubernetes"]
    service: str | None = Field(None, description="swarm: the service name")
    namespace: str | None = Field(None, description="kubernetes: the workload's namespace")
    deployment: str | None = None
    statefulset: str | None = None
    min_replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    max_replicas: int = Field(..., ge=1, le=MAX_REPLICAS)
    dry_run: bool = False
    cooldown: Cooldown = Field(default_factory=Cooldown)
    behavior: Behavior = Field(default_factory=Behavior)
    on_metric_error: Literal["hold", "fallback"] = "hold"
    fallback_replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS)
    preset: Preset | None = None
    prefix: str = Field("", pattern=r"^[a-zA-Z_:]?[a-zA-Z0-9_:]*$")
    preset_options: PresetOptions = Field(default_factory=PresetOptions)
    guards: list[GuardConfig] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)  # type: ignore[valid-type]

    @property
    def workload(self) -> str:
        return self.service or self.deployment or self.statefulset or self.name

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        return [self.replica_bounds, self.backend_fields, self.fallback_in_bounds,
                self.has_policies, self.preset_expands, self.unique_policy_names]

    def replica_bounds(self) -> list[tuple[str, str]]:
        if self.min_replicas > self.max_replicas:
            return [(
                "min_replicas",
                f"min_replicas ({self.min_replicas}) must be <= max_replicas "
                f"({self.max_replicas})",
            )]
        return []

    def backend_fields(self) -> list[tuple[str, str]]:
        return backend_field_errors(self)

    def fallback_in_bounds(self) -> list[tuple[str, str]]:
        if self.on_metric_error != "fallback":
            return []
        if self.fallback_replicas is None:
            return [("fallback_replicas", "on_metric_error: fallback needs fallback_replicas")]
        if not self.min_replicas <= self.fallback_replicas <= self.max_replicas:
            return [(
                "fallback_replicas",
                f"fallback_replicas ({self.fallback_replicas}) must be within "
                f"[{self.min_replicas}, {self.max_replicas}]",
            )]
        return []

    def preset_expands(self) -> list[tuple[str, str]]:
        """The preset's policies and guards, built from `preset_options`, must validate."""
        if self.preset is None:
            return []
        try:
            self.effective_policies()
            self.effective_guards()
        except ValidationError as exc:
            return [("preset_options", f"the preset {self.preset} cannot be built: "
                     + "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors()))]
        return []

    def has_policies(self) -> list[tuple[str, str]]:
        if not self.policies and self.preset is None:
            return [("policies", "a target needs `policies`, a `preset`, or both")]
        return []

    def unique_policy_names(self) -> list[tuple[str, str]]:
        labels = [p.label for p in self.effective_policies()]
        return [("policies", f"two policies are named {dup!r}: give each a `name`")
                for dup in sorted({n for n in labels if labels.count(n) > 1})]

    def effective_policies(self) -> list[Policy]:
        """The preset's policies followed by the explicit ones."""
        found: list[Policy] = []
        if self.preset is not None:
            types = policy_types()
            for spec in preset_policies(
                self.preset, prefix=self.prefix, backend=self.backend, workload=self.workload,
                namespace=self.namespace, options=self.preset_options,
            ):
                found.append(types[spec["type"]].model_validate(spec))
        found.extend(self.policies)
        return found

    def effective_guards(self) -> list[GuardConfig]:
        found = []
        if self.preset is not None:
            for spec in preset_guards(self.preset, prefix=self.prefix, options=self.preset_options):
                found.append(GuardConfig.model_validate(spec))
        found.extend(self.guards)
        return found

    def rules(self) -> TargetRules:
        return TargetRules(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            behavior=self.behavior,
            cooldown_up=self.cooldown.up,
            cooldown_down=self.cooldown.down,
            on_metric_error=self.on_metric_error,
            fallback_replicas=self.fallback_replicas,
        )


def backend_field_errors(target: TargetConfig) -> list[tuple[str, str]]:
    """Each backend names its workload its own way; the other backend's keys are mistakes."""
    errors = []
    if target.backend == "swarm":
        if not target.service:
            errors.append(("service", "a swarm target needs `service`"))
        for key in ("namespace", "deployment", "statefulset"):
            if getattr(target, key):
                errors.append((key, f"`{key}` is for kubernetes targets; swarm uses `service`"))
    else:
        if not target.namespace:
            errors.append(("namespace", "a kubernetes target needs `namespace`"))
        if bool(target.deployment) == bool(target.statefulset):
            errors.append(("deployment", "a kubernetes target needs exactly one of "
                                         "`deployment` or `statefulset`"))
        if target.service:
            errors.append(("service", "`service` is for swarm targets"))
    return errors


class SimulationConfig(Strict):
    capacity_per_instance: float = Field(10000.0, gt=0, description="emails/hour per instance")
    startup_delay: Duration = Field(60.0, description="before a new instance serves")
    scrape_interval: Duration = Field(15.0, description="how often the plant is sampled")
    initial_replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS,
                                         description="default: min_replicas")

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        return [self.positive_scrape]

    def positive_scrape(self) -> list[tuple[str, str]]:
        if self.scrape_interval <= 0:
            return [("scrape_interval", "scrape_interval must be above 0")]
        return []


class Settings(BaseSettings):
    """The whole config file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
        populate_by_name=True,
    )

    evaluation_interval: Duration = Field(15.0, description="time between ticks")
    dry_run: bool = Field(False, description="compute and record every decision, write nothing")
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    listen: str = Field("127.0.0.1:9464", description="host:port of /metrics /healthz /readyz")
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)
    targets: list[TargetConfig] = Field(..., min_length=1)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *_: Any,
                                   **__: Any) -> tuple[Any, ...]:
        # The loader merges file and environment itself so it can say where a value came from.
        return (init_settings,)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:9464)")
        return listen

    def cross_field_errors(self) -> list[tuple[str, str]]:
        errors = []
        if getattr(self, "evaluation_interval", 1.0) <= 0:
            errors.append(("evaluation_interval", "evaluation_interval must be above 0"))
        names = [t.name for t in getattr(self, "targets", []) if hasattr(t, "name")]
        errors.extend(("targets", f"two targets are named {dup!r}")
                      for dup in sorted({n for n in names if names.count(n) > 1}))
        return errors

    def target(self, name: str | None) -> TargetConfig:
        if name is None:
            return self.targets[0]
        for t in self.targets:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.targets)
        raise KeyError(f"no target named {name!r}; known: {known}")


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where (file and line, or env var), which key, what is wrong."""

    source: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.key or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config, ready to print one per line."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


Loc = tuple[str | int, ...]


def format_key(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that also records the line of every key and list item."""


MAX_YAML_NODES = 100_000  # a real config has hundreds; aliases must not expand past this


class _TooLarge(Exception):
    """The document, with its aliases expanded, has more nodes than any config needs."""


class _DuplicateKeys(Exception):
    """Keys given twice in one mapping: YAML would silently keep the last one."""

    def __init__(self, found: list[tuple[Loc, int]]) -> None:
        super().__init__(found)
        self.found = found


def _yaml_with_lines(text: str) -> tuple[Any, dict[Loc, int]]:
    lines: dict[Loc, int] = {}
    node = yaml.compose(text, Loader=_LineLoader)
    if node is None:
        return None, lines
    visits = 0
    duplicates: dict[tuple[int, str], tuple[Loc, int]] = {}

    def walk(n: yaml.Node, loc: Loc) -> None:
        # Aliases share nodes: walking (and later validating) expands them, so a "billion
        # laughs" file of a few lines would take hours and gigabytes. Count every visit.
        nonlocal visits
        visits += 1
        if visits > MAX_YAML_NODES:
            raise _TooLarge
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                if key in seen and k.tag != "tag:yaml.org,2002:merge":
                    duplicates.setdefault((id(n), key), ((*loc, key), k.start_mark.line + 1))
                seen.add(key)
                lines[(*loc, key)] = k.start_mark.line + 1
                walk(v, (*loc, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*loc, i)] = item.start_mark.line + 1
                walk(item, (*loc, i))

    walk(node, ())
    if duplicates:
        raise _DuplicateKeys(sorted(duplicates.values(), key=lambda d: d[1]))
    data = yaml.load(text, Loader=yaml.SafeLoader)
    return data, lines


def read_config_file(path: Path) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The file's data and a key-path -> line map (empty for TOML)."""
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
        raise ConfigError([ConfigIssue(src, None, "", reason)]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(src, None, "", f"not UTF-8 text: {exc.reason}")]) from exc
    if path.suffix.lower() == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None)
            raise ConfigError([ConfigIssue(src, line, "", f"invalid TOML: {exc}")]) from exc
        except RecursionError as exc:
            reason = "invalid TOML: nested too deeply"
            raise ConfigError([ConfigIssue(src, None, "", reason)]) from exc
        lines: dict[Loc, int] = {}
    else:
        try:
            data, lines = _yaml_with_lines(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([ConfigIssue(src, line, "", f"invalid YAML: {problem}")]) from exc
        except RecursionError as exc:
            reason = "invalid YAML: nested too deeply"
            raise ConfigError([ConfigIssue(src, None, "", reason)]) from exc
        except _TooLarge as exc:
            reason = (f"invalid YAML: more than {MAX_YAML_NODES:,} values once its aliases "
                      "(*name) are expanded; a config file needs far fewer")
            raise ConfigError([ConfigIssue(src, None, "", reason)]) from exc
        except _DuplicateKeys as exc:
            raise ConfigError([
                ConfigIssue(src, line, format_key(loc), "this key is given twice in the same "
                            "mapping (YAML would silently keep the last one)")
                for loc, line in exc.found]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(src, 1, "", "the file must hold a mapping of keys")])
    return data, lines


def _env_loc(variable: str) -> Loc:
    """AUTOSCALER_PROMETHEUS__TIMEOUT -> ("prometheus", "timeout")."""
    return tuple(variable[len(ENV_PREFIX):].lower().split("__"))


def read_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """The overrides in AUTOSCALER_* variables, parsed by pydantic-settings one variable at
    a time, so a variable that cannot be parsed is named and the others still count."""
    merged: dict[str, Any] = {}
    issues: list[ConfigIssue] = []
    for variable, value in sorted(environ.items()):
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        source = EnvSettingsSource(Settings, case_sensitive=False, env_prefix=ENV_PREFIX,
                                   env_nested_delimiter="__")
        source.env_vars = {variable.lower(): value}
        try:
            merged = deep_merge(merged, dict(source()))
        except SettingsError as exc:
            cause = exc.__cause__
            why = f"{cause}" if cause else str(exc)
            key = format_key(_env_loc(variable.upper()))
            issues.append(ConfigIssue(f"environment {variable.upper()}", None, key,
                                      f"cannot parse the value for {key}: {why}"))
    return merged, issues


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` wins; mappings merge key by key, everything else is replaced whole."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_keys(env_data: Mapping[str, Any], loc: Loc = ()) -> Iterator[Loc]:
    for key, value in env_data.items():
        if isinstance(value, Mapping):
            yield from _env_keys(value, (*loc, key))
        else:
            yield (*loc, key)


def _strip_union_tags(loc: Sequence[str | int], raw: Any) -> Loc:
    """Drop the discriminator tags pydantic puts in error paths (`policies.0.threshold.x`)."""
    out: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node \
                and node.get("type") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _lenient(model: type[Strict] | type[Settings] | type[Policy], raw: Any) -> Any:
    """Build `model` from the parts of `raw` that are valid on their own, or None.

    Lets the cross-field rules run even when a sibling key is wrong, so one run of
    check-config lists every problem.
    """
    if not isinstance(raw, dict):
        return None
    values: dict[str, Any] = {}
    invalid: list[str] = []
    for name, info in model.model_fields.items():
        key = info.alias if info.alias and info.alias in raw else name
        if key not in raw:
            continue
        if model is Settings and name == "targets" and isinstance(raw[key], list):
            values[name] = [t for t in (_lenient(TargetConfig, x) for x in raw[key]) if t]
            continue
        try:
            annotation: Any = info.annotation
            if info.metadata:  # keep validators such as Duration's parser and ge/le bounds
                annotation = Annotated[(annotation, *info.metadata)]
            values[name] = TypeAdapter(annotation).validate_python(raw[key])
        except Exception:
            invalid.append(name)
    try:
        obj = model.model_construct(**values)
    except Exception:
        return None
    for name in invalid:  # an invalid key must not read as its default
        obj.__dict__.pop(name, None)
    return obj


def _cross_issues(obj: Any, loc: Loc) -> list[tuple[Loc, str]]:
    try:
        return [((*loc, key), msg) for key, msg in obj.cross_field_errors()]
    except Exception:
        return []


def cross_field_issues(raw: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Every cross-field rule, run on whatever parts of the raw data are valid."""
    found: list[tuple[Loc, str]] = []
    blocks: list[tuple[type[Any], Any, Loc]] = [
        (Settings, raw, ()),
        (PrometheusConfig, raw.get("prometheus"), ("prometheus",)),
        (LeaderElectionConfig, raw.get("leader_election"), ("leader_election",)),
        (SimulationConfig, raw.get("simulation"), ("simulation",)),
    ]
    targets = raw.get("targets")
    if isinstance(targets, list):
        for i, target in enumerate(targets):
            blocks.append((TargetConfig, target, ("targets", i)))
            if not isinstance(target, dict):
                continue
            for key, model in (("guards", GuardConfig), ("policies", None)):
                items = target.get(key)
                if not isinstance(items, list):
                    continue
                for j, item in enumerate(items):
                    cls: type[Any] | None = model
                    if cls is None and isinstance(item, dict):
                        cls = policy_types().get(str(item.get("type")))
                    if cls is not None:
                        blocks.append((cls, item, ("targets", i, key, j)))
    for model, data, loc in blocks:
        obj = _lenient(model, data)
        if obj is not None:
            found.extend(_cross_issues(obj, loc))
    return found


def _friendly(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "union_tag_invalid":
        return f"unknown policy type; known: {', '.join(sorted(policy_types()))}"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def load_config_data(
    data: Mapping[str, Any],
    *,
    source: str = "config",
    lines: Mapping[Loc, int] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate already-parsed data (plus environment overrides) into Settings."""
    env = os.environ if environ is None else environ
    env_data, issues = read_environment(env)
    env_locs = set(_env_keys(env_data))
    merged = deep_merge(dict(data), env_data)
    lines = lines or {}

    def where(loc: Loc) -> tuple[str, int | None]:
        def variable(env_loc: Loc) -> str:
            return "environment " + ENV_PREFIX + "__".join(str(p) for p in env_loc).upper()

        for n in range(len(loc), 0, -1):
            if loc[:n] in env_locs:
                return variable(loc[:n]), None
        # The variable set something below the key in error (e.g. AUTOSCALER_TARGETS__0__X
        # when `targets` itself is wrong): still the variable's doing.
        deeper = sorted(e for e in env_locs if e[:len(loc)] == loc and len(e) > len(loc))
        if loc and deeper:
            return variable(deeper[0][:len(loc)] if len(deeper) > 1 else deeper[0]), None
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                return source, lines[loc[:n]]
        return source, None

    seen: set[tuple[Loc, str]] = set()

    def add(loc: Loc, message: str) -> None:
        if (loc, message) in seen:
            return
        seen.add((loc, message))
        src, line = where(loc)
        issues.append(ConfigIssue(src, line, format_key(loc), message))

    for key in [k for k in merged if not isinstance(k, str)]:
        add((), f"top-level key {key!r} is not a name (keys are text such as `targets`)")
        del merged[key]
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        for err in exc.errors():
            add(_strip_union_tags(err["loc"], merged), _friendly(err))
    for loc, message in cross_field_issues(merged):
        add(loc, message)
    if issues or settings is None:
        issues.sort(key=lambda i: (i.source != source, i.line or 0, i.key))
        raise ConfigError(issues)
    return settings


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate a YAML or TOML config file; ConfigError lists every problem."""
    p = Path(path)
    data, lines = read_config_file(p)
    return load_config_data(data, source=str(p), lines=lines, environ=environ)


REDACTED = "<redacted>"


def url_without_password(url: str) -> str:
    """`https://user:secret@host/` -> `https://user:<redacted>@host/` (unchanged without one)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{REDACTED}@{host}{slash}{path}"


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, with header values and a password in the URL
    hidden (they carry tokens). Secret FILES appear as their paths, never their content."""
    dumped = settings.model_dump(mode="json", by_alias=True, exclude_none=True)
    prometheus = dumped.get("prometheus", {})
    headers = prometheus.get("headers", {})
    for key in headers:
        headers[key] = REDACTED
    if "url" in prometheus:
        prometheus["url"] = url_without_password(prometheus["url"])
    return dumped


def _open_to_others(path: Path) -> int | None:
    """The file's permission bits when group or others may read it, else None (or missing)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o044 else None


def kubeconfig_path(environ: Mapping[str, str]) -> Path | None:
    """The kubeconfig the Kubernetes client would read outside a pod, if any."""
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return None  # in a pod: the service account's token, mounted by the kubelet
    first = environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = Path(first) if first else Path(environ.get("HOME", "~")).expanduser() / ".kube" / \
        "config"
    return path if path.is_file() else None


def security_warnings(settings: Settings, config_path: str | Path | None = None,
                      environ: Mapping[str, str] | None = None) -> list[str]:
    """What weakens the daemon's secrets, to warn about without refusing to start: secrets
    readable by group/others (the config file when it holds some, each secret file, the
    kubeconfig), TLS verification turned off, credentials sent over plain HTTP."""
    env = os.environ if environ is None else environ
    prom = settings.prometheus
    found: list[str] = []
    inline = [key for key, present in (("prometheus.headers", bool(prom.headers)),
                                       ("prometheus.url (password)",
                                        url_without_password(prom.url) != prom.url))
              if present]
    files: list[tuple[str, Path]] = []
    if config_path is not None and inline:
        files.append((f"config file (holds {', '.join(inline)})", Path(config_path)))
    if prom.bearer_token_file is not None:
        files.append(("prometheus.bearer_token_file", prom.bearer_token_file))
    if prom.basic_auth is not None:
        files.append(("prometheus.basic_auth.password_file", prom.basic_auth.password_file))
    if settings.leader_election.mode == "kubernetes" or any(
            t.backend == "kubernetes" for t in settings.targets):
        kubeconfig = kubeconfig_path(env)
        if kubeconfig is not None:
            files.append(("kubeconfig (holds the Kubernetes credentials)", kubeconfig))
    for what, path in files:
        mode = _open_to_others(path)
        if mode is not None:
            found.append(f"{path}: {what} is readable by group or others (mode {mode:04o}); "
                         f"chmod 600 {path}")
    if prom.url.startswith("https://") and not prom.verify_tls and prom.ca_file is None:
        found.append("prometheus.verify_tls is false: the certificate of "
                     f"{url_without_password(prom.url)} is not checked, so anyone on the path "
                     "can pose as Prometheus and read the credentials sent to it")
    credentials = inline or prom.bearer_token_file is not None or prom.basic_auth is not None
    host = prom.url.partition("://")[2].rpartition("@")[2].split("/")[0].rsplit(":", 1)[0]
    if prom.url.startswith("http://") and credentials and host not in (
            "127.0.0.1", "localhost", "[::1]"):
        found.append(f"prometheus credentials are sent in clear text to {host} (http://); "
                     "use https://")
    return found


def config_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors."""
    schema = Settings.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Stalwart autoscaler configuration"
    return schema


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


