"""The config file's models: every key, its type and constraints, and the cross-field rules.

Unknown keys are errors everywhere. New keys go here, with their single-key constraints on
the field itself (the JSON Schema is generated from them) and only rules that involve several
keys in `cross_field_rules`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from autoscaler.behavior import Behavior
from autoscaler.config.fields import (
    MAX_REPLICAS,
    NAME_PATTERN,
    FilePath,
    HeaderName,
    HeaderValue,
    HttpUrl,
    Listen,
    Replicas,
)
from autoscaler.decide import TargetRules
from autoscaler.model import GuardBlock
from autoscaler.presets import (
    Preset,
    PresetOptions,
    Scope,
    effective_scope,
    preset_guards,
    preset_policies,
)
from autoscaler.registry import policy_types
from autoscaler.units import (
    DURATION_MIN_LENGTH,
    DURATION_PATTERN,
    MAX_DURATION_SECONDS,
    Duration,
    format_duration,
    parse_duration,
)
from policies import Policy
from policies.base import PlantSignal

ENV_PREFIX = "AUTOSCALER_"
__all__ = ["MAX_REPLICAS", "NAME_PATTERN"]  # re-exported: they were defined here
# Strict numbers and booleans (`max_replicas: on` is an error, as the schema says), no NaN or
# ±Inf. Enums and paths opt out of strictness field by field (their input is text).
MODEL_CONFIG = ConfigDict(extra="forbid", populate_by_name=True, strict=True,
                          allow_inf_nan=False)


class Strict(BaseModel):
    """Unknown keys are errors; single-key constraints live on the field (so the generated
    schema carries them), rules that involve several keys in `cross_field_rules`."""

    model_config = MODEL_CONFIG

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
    password_file: FilePath = Field(..., description="file holding the password (not the password)")


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v),
]


def _query_offset(value: Any) -> float | str:
    """`auto`, or a duration in seconds."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (or auto)") from None


QueryOffset = Annotated[
    float | Literal["auto"],
    BeforeValidator(_query_offset),
    PlainSerializer(lambda v: v if v == "auto" else format_duration(v),
                    return_type=str | int | float),
    # the duration's own bounds and grammar (units.py), plus `auto`
    WithJsonSchema({"anyOf": [{"const": "auto"},
                              {"type": "number", "minimum": 0,
                               "maximum": MAX_DURATION_SECONDS},
                              {"type": "string", "pattern": DURATION_PATTERN,
                               "minLength": DURATION_MIN_LENGTH}],
                    "description": "auto, seconds, or a duration such as 30s"}),
]


class PrometheusConfig(Strict):
    url: HttpUrl = Field("http://127.0.0.1:9090",
                         description="base URL of the Prometheus HTTP API")
    timeout: Duration = Field(5.0, gt=0, description="per query; retries stay within the tick")
    bearer_token_file: FilePath | None = None
    basic_auth: BasicAuth | None = None
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    ca_file: FilePath | None = None
    verify_tls: bool = True
    cert_file: FilePath | None = Field(
        None, description="client certificate (PEM) for a metrics endpoint that requires "
        "mutual TLS; with key_file")
    key_file: FilePath | None = Field(
        None, description="the client certificate's private key (PEM)")
    query_offset: QueryOffset = Field(
        "auto",
        description="evaluate every query this far in the past: a backend that shows samples "
        "only after a delay (VictoriaMetrics' -search.latencyOffset, 30s by default) would "
        "otherwise read stale or empty. `auto` learns it from the backend (time() at a given "
        "time) at start and at every reachability probe; Prometheus, Thanos, Mimir: 0",
    )
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

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        return [self.one_auth_method, self.client_cert_pair]

    def client_cert_pair(self) -> list[tuple[str, str]]:
        """A client certificate needs its key and the other way round."""
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            return [(missing, "cert_file and key_file go together (mutual TLS)")]
        return []

    def one_auth_method(self) -> list[tuple[str, str]]:
        if self.bearer_token_file is not None and self.basic_auth is not None:
            return [("bearer_token_file", "use bearer_token_file or basic_auth, not both")]
        if "@" in self.url.partition("://")[2].split("/")[0] and (
                self.bearer_token_file is not None or self.basic_auth is not None):
            # requests would send the URL's user:password and silently drop the other one
            return [("url", "credentials in the URL cannot be combined with "
                            "bearer_token_file or basic_auth")]
        return []


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
    block: GuardBlock = Field(GuardBlock.SCALE_DOWN, strict=False)
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
    return Annotated[Union[types], Discriminator("type")]  # noqa: UP007


class _PolicyTypes:
    """The policy types (built-ins and plugins) are looked up when the config schema is first
    built, at the first load, not at import: a broken plugin is then a RegistryError the
    CLI reports (check-config exits 2), never a traceback from an import."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return handler.generate_schema(_policy_union())


PolicySpec = Annotated[Policy, _PolicyTypes]


API_VERSION_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"v[0-9]+((alpha|beta)[0-9]+)?$")
KIND_PATTERN = r"^[A-Za-z][A-Za-z0-9]*$"
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


_REF_HINTS = {
    "api_version": "must be group/version as an HPA's scaleTargetRef writes it (e.g. "
                   "argoproj.io/v1alpha1, apps/v1), or v1 for the core group",
    "kind": "must be a kind as the API names it (letters and digits, e.g. Rollout)",
    "name": "must be a Kubernetes object name (lower-case letters, digits, '-' and '.')",
}


class ScaleTargetRef(Strict):
    """Any workload with a scale subresource, named as an HPA's `scaleTargetRef` names it
    (Argo Rollouts, any custom resource that declares `subresources.scale`)."""

    api_version: str = Field(..., pattern=API_VERSION_PATTERN, max_length=253,
                             description="group/version, e.g. argoproj.io/v1alpha1 "
                                         "(v1 for the core group)")
    kind: str = Field(..., pattern=KIND_PATTERN, max_length=63,
                      description="the object's kind, e.g. Rollout")
    name: str = Field(..., pattern=OBJECT_NAME_PATTERN, max_length=253,
                      description="the object's name, in the target's namespace")

    @field_validator("api_version", "kind", "name", mode="wrap")
    @classmethod
    def _said_plainly(cls, value: Any, handler: Callable[[Any], str],
                      info: ValidationInfo) -> str:
        """The pattern stays in the schema; a mismatch is said in words, not as a regex."""
        try:
            return handler(value)
        except ValidationError as exc:
            if any(e["type"] == "string_pattern_mismatch" for e in exc.errors()):
                raise ValueError(_REF_HINTS[str(info.field_name)]) from None
            raise

    @property
    def group(self) -> str:
        """`argoproj.io/v1alpha1` → `argoproj.io`; the core group's `v1` → ""."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def describe(self) -> str:
        return (f"scale_target_ref {{api_version: {self.api_version}, kind: {self.kind}, "
                f"name: {self.name}}}")


APPS_SHORTHANDS = {"Deployment": "deployment", "StatefulSet": "statefulset"}


class TargetConfig(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True,
                              allow_inf_nan=False,  # as MODEL_CONFIG
                              defer_build=True)  # the policy types: see _PolicyTypes
    name: str = Field(..., pattern=NAME_PATTERN)
    backend: Literal["swarm", "kubernetes"]
    service: str | None = Field(None, description="swarm: the service name")
    namespace: str | None = Field(None, description="kubernetes: the workload's namespace")
    deployment: str | None = None
    statefulset: str | None = None
    scale_target_ref: ScaleTargetRef | None = Field(
        None, description="kubernetes: any workload with a scale subresource, as an HPA "
                          "names it (instead of `deployment` or `statefulset`)")
    min_replicas: Replicas = 1
    max_replicas: Replicas
    dry_run: bool = False
    cooldown: Cooldown = Field(default_factory=Cooldown)
    behavior: Behavior = Field(default_factory=Behavior)
    on_metric_error: Literal["hold", "fallback"] = "hold"
    fallback_replicas: Replicas | None = None
    preset: Preset | None = None
    prefix: str = Field("", pattern=r"^[a-zA-Z_:]?[a-zA-Z0-9_:]*$")
    preset_options: PresetOptions = Field(default_factory=PresetOptions)
    guards: list[GuardConfig] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)

    @property
    def workload(self) -> str:
        ref_name = self.scale_target_ref.name if self.scale_target_ref else None
        return self.service or self.deployment or self.statefulset or ref_name or self.name

    def kube_workload(self) -> tuple[str, str, str]:
        """(apiVersion, kind, name) of a kubernetes target's workload, as an HPA's
        scaleTargetRef names it: `deployment: x` is (apps/v1, Deployment, x)."""
        if self.scale_target_ref is not None:
            ref = self.scale_target_ref
            return (ref.api_version, ref.kind, ref.name)
        if self.statefulset:
            return ("apps/v1", "StatefulSet", self.statefulset)
        return ("apps/v1", "Deployment", self.deployment or "")

    def metric_identity(self) -> tuple[str, str, str, str]:
        """(namespace, kind, workload, service) for the own metrics' labels, so a target's
        series join with kube-state-metrics and cAdvisor (Kubernetes: namespace, kind and
        workload name; Swarm: the service); "" where a backend has none."""
        if self.backend == "kubernetes":
            _, kind, name = self.kube_workload()
            return (self.namespace or "", kind, name, "")
        return ("", "", "", self.service or "")

    @property
    def workload_kind(self) -> str:
        """deployment, statefulset, or any other kind in lower case (its pods' names)."""
        _, kind, _ = self.kube_workload()
        return APPS_SHORTHANDS.get(kind, kind.lower())

    def preset_scope(self) -> Scope:
        """The label matchers the preset's queries select this target's series with."""
        return effective_scope(self.preset_options, backend=self.backend,
                               workload=self.workload, namespace=self.namespace,
                               kind=self.workload_kind)

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        return [self.replica_bounds, self.backend_fields, self.fallback_in_bounds,
                self.has_policies, self.preset_expands, self.unique_policy_names]

    def replica_bounds(self) -> list[tuple[str, str]]:
        if self.min_replicas <= self.max_replicas:
            return []
        bounds = f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
        return [("min_replicas", bounds)]

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
                namespace=self.namespace, options=self.preset_options, kind=self.workload_kind,
            ):
                found.append(types[spec["type"]].model_validate(spec))
        found.extend(self.policies)
        return found

    def effective_guards(self) -> list[GuardConfig]:
        found = []
        if self.preset is not None:
            for spec in preset_guards(self.preset, prefix=self.prefix, options=self.preset_options,
                                      scope=self.preset_scope()):
                found.append(GuardConfig.model_validate(spec))
        found.extend(self.guards)
        return found

    def expansion(self) -> dict[str, Any]:
        """What the target runs on: every effective policy and guard (the preset's first),
        and the preset's selectors; `check-config` prints it under `effective`."""
        dump: dict[str, Any] = {}
        if self.preset is not None:
            scope = self.preset_scope()
            dump["selector"] = scope.selector
            dump["container_selector"] = scope.container_selector
        dump["policies"] = [p.model_dump(mode="json", by_alias=True, exclude_none=True)
                            for p in self.effective_policies()]
        dump["guards"] = [g.model_dump(mode="json", by_alias=True, exclude_none=True)
                          for g in self.effective_guards()]
        return dump

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
        for key in ("namespace", "deployment", "statefulset", "scale_target_ref"):
            if getattr(target, key):
                errors.append((key, f"`{key}` is for kubernetes targets; swarm uses `service`"))
    else:
        if not target.namespace:
            errors.append(("namespace", "a kubernetes target needs `namespace`"))
        named = [key for key in ("deployment", "statefulset", "scale_target_ref")
                 if getattr(target, key)]
        if len(named) != 1:
            errors.append((named[0] if named else "deployment",
                           "a kubernetes target needs exactly one of `deployment`, "
                           "`statefulset` or `scale_target_ref`"
                           + (f" (it has {', '.join(named)})" if named else "")))
        if target.service:
            errors.append(("service", "`service` is for swarm targets"))
    return errors


def same_preset_scope_errors(targets: Sequence[Any]) -> list[tuple[str, str]]:
    """Two preset targets whose queries select the same series would read (and scale on)
    each other's load: an error naming both."""
    seen: dict[tuple[str, str], str] = {}
    errors = []
    for target in targets:
        if getattr(target, "preset", None) is None or not hasattr(target, "name"):
            continue
        try:
            scope = target.preset_scope()
        except (AttributeError, TypeError, ValueError):
            continue  # a target that is invalid on its own reports that instead
        key = (scope.selector, scope.container_selector)
        if key in seen:
            errors.append(("targets", (
                f"targets {seen[key]!r} and {target.name!r} have identical effective preset "
                f"selectors (selector: {scope.selector!r}, container_selector: "
                f"{scope.container_selector!r}): each would scale on the other's load; set "
                "preset_options.selector and container_selector to tell their series apart")))
        else:
            seen[key] = target.name
    return errors


class SimulationConfig(Strict):
    capacity_per_instance: float = Field(10000.0, gt=0, description="emails/hour per instance")
    startup_delay: Duration = Field(60.0, description="before a new instance serves")
    scrape_interval: Duration = Field(15.0, gt=0, description="how often the plant is sampled")
    initial_replicas: Replicas | None = Field(None, description="default: min_replicas")


class Settings(BaseSettings):
    """The whole config file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
        populate_by_name=True, strict=True, allow_inf_nan=False,
        case_sensitive=True,  # in the file, `Targets` is an unknown key (environment: any case)
        defer_build=True,  # holds TargetConfig: see _PolicyTypes
    )

    evaluation_interval: Duration = Field(15.0, gt=0, description="time between ticks")
    log_level: LogLevel = Field("INFO", description="least severe log line written "
                                "(DEBUG, INFO, WARNING, ERROR, CRITICAL; any case); "
                                "`run --log-level` wins over it")
    dry_run: bool = Field(False, description="compute and record every decision, write nothing")
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    listen: Listen = Field("127.0.0.1:9464", description="host:port of /metrics /healthz /readyz")
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)
    targets: list[TargetConfig] = Field(..., min_length=1)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *_: Any,
                                   **__: Any) -> tuple[Any, ...]:
        # The loader merges file and environment itself so it can say where a value came from.
        return (init_settings,)

    def cross_field_rules(self) -> list[Callable[[], list[tuple[str, str]]]]:
        return [self.unique_target_names, self.distinct_preset_scopes]

    def cross_field_errors(self) -> list[tuple[str, str]]:
        return Strict.cross_field_errors(self)  # type: ignore[arg-type]

    def unique_target_names(self) -> list[tuple[str, str]]:
        names = [t.name for t in getattr(self, "targets", []) if hasattr(t, "name")]
        return [("targets", f"two targets are named {dup!r}")
                for dup in sorted({n for n in names if names.count(n) > 1})]

    def distinct_preset_scopes(self) -> list[tuple[str, str]]:
        return same_preset_scope_errors(getattr(self, "targets", []))

    def target(self, name: str | None) -> TargetConfig:
        if name is None:
            return self.targets[0]
        for t in self.targets:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.targets)
        raise KeyError(f"no target named {name!r}; known: {known}")
