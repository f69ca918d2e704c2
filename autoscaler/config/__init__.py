"""The configuration: pydantic(-settings) models, validated once at load.

Files are YAML or TOML; `AUTOSCALER_`-prefixed environment variables (`__` for nesting)
override them. Split by concern: `models` (keys, constraints, cross-field rules), `files`
(YAML with line numbers, TOML), `environment` (overrides), `load` (validation reporting every
problem at once), `security` (redaction and warnings), `schema` (JSON Schema). The names
below are the package's public surface.
"""

from autoscaler.config.environment import deep_merge, read_environment
from autoscaler.config.files import MAX_YAML_NODES, read_config_file
from autoscaler.config.issues import ConfigError, ConfigIssue, Loc, format_key
from autoscaler.config.load import cross_field_issues, load_config, load_config_data
from autoscaler.config.models import (
    ENV_PREFIX,
    MAX_REPLICAS,
    NAME_PATTERN,
    BasicAuth,
    Cooldown,
    GuardConfig,
    LeaderElectionConfig,
    PolicySpec,
    PrometheusConfig,
    ScaleTargetRef,
    Settings,
    SimulationConfig,
    Strict,
    TargetConfig,
    backend_field_errors,
)
from autoscaler.config.schema import config_schema, dump_json
from autoscaler.config.security import (
    REDACTED,
    kubeconfig_path,
    redacted_dump,
    security_warnings,
    url_without_password,
)

__all__ = [
    "ENV_PREFIX", "MAX_REPLICAS", "MAX_YAML_NODES", "NAME_PATTERN", "REDACTED", "BasicAuth",
    "ConfigError", "ConfigIssue", "Cooldown", "GuardConfig", "LeaderElectionConfig", "Loc",
    "PolicySpec", "PrometheusConfig", "ScaleTargetRef", "Settings", "SimulationConfig", "Strict",
    "TargetConfig",
    "backend_field_errors", "config_schema", "cross_field_issues", "deep_merge", "dump_json",
    "format_key", "kubeconfig_path", "load_config", "load_config_data", "read_config_file",
    "read_environment", "redacted_dump", "security_warnings", "url_without_password",
]
