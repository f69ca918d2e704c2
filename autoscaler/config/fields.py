"""The single-key constraints of the config, as types: each is both what the validator
enforces and what the generated JSON Schema says (one source, no hand-kept copy).

Numbers are strict (`max_replicas: on` or `"5"` is an error, as in the schema) and finite
(NaN and ±Inf are refused: a NaN bound never trips, and JSON cannot carry one); the models set
`strict=True, allow_inf_nan=False` for that. Environment variables are text: the loader turns
them into the type the schema asks for before validating (see `environment.coerce`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, WithJsonSchema

# Kubernetes keeps replicas in an int32; a larger count could not be written anywhere, and
# 10**400 would not even fit the float of a metric.
MAX_REPLICAS = 2**31 - 1
NAME_PATTERN = r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$"
PORT = (r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
        r"|6553[0-5])")
HOST = r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])"
LISTEN_PATTERN = rf"^{HOST}:{PORT}$"
# scheme, optional user[:password]@, host, optional port, optional path; no query or fragment
# (the API paths are appended to it). Short names such as http://db are fine.
URL_PATTERN = rf"^https?://(?:[^\x00-\x20\x7f/?#@]+@)?{HOST}(?::{PORT})?(?:/[^\x00-\x20\x7f?#]*)?$"
# A file path: any text but NUL, which no operating system accepts in a path.
PATH_PATTERN = r"^[^\x00]+$"
# HTTP header names are tokens; values visible ASCII (what `requests` sends without refusing).
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
HEADER_VALUE_PATTERN = r"^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$"
# Every other string: anything but NUL (the schema says the same, see schema.py).
NO_NUL_PATTERN = r"^[^\x00]*$"

# What a pattern means, for the error message instead of the regular expression itself.
PATTERN_HINTS = {
    NAME_PATTERN: "a name of lowercase letters, digits, '.', '_', '-' (at most 63)",
    LISTEN_PATTERN: "host:port with a port from 1 to 65535 (e.g. 127.0.0.1:9464)",
    URL_PATTERN: "an http:// or https:// URL without query or fragment (e.g. http://db:9090)",
    PATH_PATTERN: "a file path (not empty, no NUL character)",
    HEADER_NAME_PATTERN: "an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)",
    HEADER_VALUE_PATTERN: "an HTTP header value: visible ASCII, no leading or trailing space",
    NO_NUL_PATTERN: "text without a NUL character",
}

Replicas = Annotated[int, Field(ge=1, le=MAX_REPLICAS, strict=True)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Listen = Annotated[str, StringConstraints(pattern=LISTEN_PATTERN)]
HttpUrl = Annotated[str, StringConstraints(pattern=URL_PATTERN),
                    AfterValidator(lambda url: url.rstrip("/"))]


def _file_path(value: Any) -> Any:
    """Text that passes PATH_PATTERN becomes a Path; anything else is left to be refused."""
    if isinstance(value, str):
        if re.fullmatch(PATH_PATTERN, value) is None:
            raise ValueError(f"{value!r} is not {PATTERN_HINTS[PATH_PATTERN]}")
        return Path(value)
    return value


FilePath = Annotated[Path, BeforeValidator(_file_path),
                     WithJsonSchema({"type": "string", "format": "path", "pattern": PATH_PATTERN})]
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN)]
HeaderValue = Annotated[str, StringConstraints(pattern=HEADER_VALUE_PATTERN)]
