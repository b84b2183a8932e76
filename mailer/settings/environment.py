"""The environment: the process's variables and the ``.env`` file turned into
:class:`~mailer.settings.schema.Settings`, the one place of mailer that reads ``os.environ``.

Every leaf setting is a variable ``MAILER_<SECTION>__<KEY>`` (or ``MAILER_<KEY>`` at top
level), named from the schema by :func:`setting_fields`. An unknown variable gets a
suggestion, a wrong one a line naming it and where it came from, all in one
:class:`~mailer.errors.ConfigError`; a secret's value is never echoed.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError

from mailer.errors import ConfigError
from mailer.settings.schema import ENV_PREFIX, NESTED_DELIMITER, Settings
from mailer.settings.section import Section


def setting_fields(
    model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX
) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """Yield ``(variable name, field path, field info)`` for every leaf setting."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            for var, path, leaf in setting_fields(
                annotation, f"{prefix}{name.upper()}{NESTED_DELIMITER}"
            ):
                yield var, (name, *path), leaf
        else:
            yield f"{prefix}{name.upper()}", (name,), info


def known_variables() -> list[str]:
    return [var for var, _, _ in setting_fields()]


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
    *,
    env_file_required: bool = False,
) -> Settings:
    """Build the settings from ``environ`` (default: the process) and ``env_file``.

    A missing ``env_file`` is fine (defaults and the environment), unless
    ``env_file_required`` (the user named it with ``--env-file``). Raises
    :class:`ConfigError` with one line per wrong variable, naming where it came from.
    """
    environ = os.environ if environ is None else environ
    if env_file_required and env_file is not None and not env_file.is_file():
        what = "is a folder, not a file" if env_file.is_dir() else "no such file"
        raise ConfigError(f"{env_file}: {what} (--env-file)")
    file_values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        try:
            raw = dotenv_values(env_file, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{env_file}: cannot be read as UTF-8 text ({exc})") from None
        file_values = {k: v for k, v in raw.items() if v is not None}
    known = set(known_variables())
    secret = {var for var, _, info in setting_fields() if "SecretStr" in str(info.annotation)}
    problems: list[str] = []
    for source, mapping in (("environment", environ), (str(env_file), file_values)):
        for key in mapping:
            if key.upper().startswith(ENV_PREFIX) and key.upper() not in known:
                hint = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.8)
                also = f"; did you mean {hint[0]}?" if hint else "; see .env.example"
                problems.append(f"{key} (in {source}): unknown setting{also}")
    if problems:
        raise ConfigError("\n".join(problems))

    merged = {**file_values, **{k: v for k, v in environ.items() if k.upper() in known}}
    try:
        return _build(merged)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            var = ENV_PREFIX + NESTED_DELIMITER.join(str(p).upper() for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            if var not in known:  # a rule across several variables of a section
                lines.append(f"{var}__*: {message}")
                continue
            where = "environment" if var in environ or env_file is None else str(env_file)
            given = "" if "got" in message else f" (got {error.get('input')!r})"
            if var in secret or var == "MAILER_DATABASE__URL":
                given = ""  # never echo a secret
            lines.append(f"{var} (in {where}): {message}{given}")
        raise ConfigError("\n".join(lines)) from None


def _build(variables: Mapping[str, str]) -> Settings:
    """Build Settings from exactly ``variables``, ignoring the process environment."""
    nested: dict[str, Any] = {}
    for var, path, _ in setting_fields():
        if var in variables:
            value: Any = variables[var]
            if value == "" and len(path) > 1:
                continue  # an empty value means "use the default"
            target = nested
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
    return Settings.model_validate(nested)
