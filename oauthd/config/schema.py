"""The schema machinery: a section is a frozen dataclass whose fields carry, in their
metadata, the converter that checks and converts the TOML value and the default as it
would be written in the file; `build` walks them. Unknown keys and sections are errors, and
every error names the file and the key path: `config.toml: storage.save_debounce: ...`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from oauthd.exits import ExitCode

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")
_SCHEMA = "oauthd.config"
_REQUIRED = object()  # default of a key that must be given


class ConfigError(Exception):
    """The config cannot be used; str() is `<file>: <key path>: <message>`, one line per
    problem (`messages`): a file is checked whole, every error reported at once."""

    exit_code: ClassVar[ExitCode] = ExitCode.CONFIG

    def __init__(self, *messages: str) -> None:
        super().__init__("\n".join(messages))
        self.messages: tuple[str, ...] = messages


# --- where a value sits, for error messages ---------------------------------------------


@dataclass(frozen=True, slots=True)
class At:
    file: str
    path: str  # "" for the whole file, else like "login.users[1].username"
    base_dir: Path  # relative paths in the file are resolved against this

    def key(self, name: str) -> At:
        return At(self.file, f"{self.path}.{name}" if self.path else name, self.base_dir)

    def item(self, index: int) -> At:
        return At(self.file, f"{self.path}[{index}]", self.base_dir)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.path}: {message}")


def show(value: object) -> str:
    """A value as the operator wrote it in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


# --- keys and sections ------------------------------------------------------------------

Converter = Callable[[object, At], Any]
Check = Callable[[Any, At], None]  # a rule over several keys of a built section


@dataclass(frozen=True, slots=True)
class _Key:
    convert: Converter
    default: object  # as written in TOML, converted like a given value; or _REQUIRED


def key(convert: Converter, default: object = _REQUIRED) -> Mapping[str, _Key]:
    """A field's metadata: how its TOML value is converted, and its default (none: the
    key is required)."""
    return {_SCHEMA: _Key(convert, default)}


def section(cls: type[D], check: Check | None = None) -> Converter:
    """The converter of a sub-table built as `cls`, then checked by `check`."""
    return lambda value, at: build(cls, value, at, check)


def build(cls: type[D], value: object, at: At, check: Check | None = None, **given: object) -> D:
    """Build dataclass `cls` from a TOML table, converting each key its field declares;
    `given` fills fields that are not keys (the config's own path)."""
    if not isinstance(value, dict):
        raise at.error(f"expected a table, got {show(value)}")
    schema = {f.name: f.metadata[_SCHEMA] for f in fields(cls) if _SCHEMA in f.metadata}
    errors = [_unknown(name, schema, at) for name in value if name not in schema]
    values = {}
    for name, key in schema.items():
        try:
            values[name] = _value(key, value, name, at.key(name))
        except ConfigError as exc:  # go on: every error of the file at once
            errors.extend(exc.messages)
    if errors:
        raise ConfigError(*errors)
    built = cls(**values, **given)
    if check is not None:
        check(built, at)
    return built


def _unknown(name: str, schema: Mapping[str, _Key], at: At) -> str:
    """ "unknown key", with the closest known name when there is one (a typo)."""
    what = "unknown key" if at.path else "unknown section"
    close = difflib.get_close_matches(name, list(schema), n=1, cutoff=0.7)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return str(at.key(name).error(what + hint))


def _value(key: _Key, table: dict[str, object], name: str, at: At) -> Any:
    if name in table:
        return key.convert(table[name], at)
    if key.default is _REQUIRED:
        raise at.error("missing (this key is required)")
    return key.convert(key.default, at)
