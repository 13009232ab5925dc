"""One TOML file for the settings a shop deploys with, layered flag > env > file > default.

    # <workspace>/endcloud.toml   (or `--config PATH`, or $ENDCLOUD_CONFIG)
    [serve]
    port = 8080
    min_match = 0.3
    cors_origins = ["https://shop.example.com"]
    [evolve]
    min_labels = 16
    [cloud]
    base_url = "https://api.example.com/v1"
    model = "gemini-1.5-pro"
    [privacy]
    retention_days = 180

Every key of a section is an environment variable a room already reads (`[serve] min_match`
is `ENDCLOUD_SERVE_MIN_MATCH`, `[cloud] model` is `ENDCLOUD_CLOUD_MODEL`), so the file is one
more layer *under* the environment: `apply_to_environ` sets the variables the environment
leaves unset, and every room goes on reading its settings as before (worker processes too).
`resolve` says which layer each value in force came from; `endcloud config show` prints it.

This module knows no room: the sections (their keys, defaults and variables) are declared by
the CLI, the outermost layer, which may import every room (`endcloud/cli/config.py`).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
import re
import tokenize
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from endcloud.errors import ConfigError

CONFIG_ENV = "ENDCLOUD_CONFIG"  # a config file's path, when no --config is given
FILE_NAME = "endcloud.toml"  # looked for in the workspace when neither is given
SOURCES = ("flag", "env", "file", "default")  # highest first


@dataclass(frozen=True)
class Key:
    """One setting: its name in the file, the variable that sets it, its default and help."""

    name: str
    env: str
    default: Any = None
    help: str = ""
    secret: bool = False  # printed as *** (set) by `config show`
    kind: type | None = None  # how a variable's text is read where the default (None) does not say


@dataclass(frozen=True)
class Section:
    """A `[name]` table of the file."""

    name: str
    keys: tuple[Key, ...]
    help: str = ""

    def key(self, name: str) -> Key:
        for k in self.keys:
            if k.name == name:
                return k
        raise ConfigError(f"[{self.name}] has no setting {name!r}; valid: {', '.join(k.name for k in self.keys)}")


@dataclass(frozen=True)
class Resolved:
    """A setting in force and the layer it came from (one of `SOURCES`)."""

    section: str
    key: Key
    value: Any
    source: str

    @property
    def shown(self) -> str:
        if self.key.secret:
            return "(unset)" if self.value in (None, "", (), []) else "***"
        return shown_value(self.value)


def format_value(value: Any) -> str:
    """A value as `config show` prints it (and as a variable would hold it)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def shown_value(value: Any) -> str:
    """`format_value`, with an empty list said in words (an empty line reads as a bug)."""
    return "(none)" if isinstance(value, (list, tuple)) and not value else format_value(value)


def env_text(value: Any) -> str:
    """A file value as its environment variable would spell it (lists comma-separated)."""
    return "" if value is None else format_value(value)


def from_env_text(key: Key, raw: str) -> Any:
    """A variable's text as the type of the key's default (text where the default is None)."""
    d = key.default if key.default is not None or key.kind is None else key.kind(0)
    try:
        if isinstance(d, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(d, (tuple, list)):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
        if isinstance(d, int):
            return int(raw)
        if isinstance(d, float):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{key.env}={raw!r} is not a valid {type(d).__name__}") from None
    return raw


def find_config(explicit: str | os.PathLike[str] | None = None, workspace_root: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> Path | None:
    """The file to read: `explicit` (--config), else $ENDCLOUD_CONFIG, else `<workspace>/endcloud.toml`
    when it exists, else None. A named file that is missing is an error, never silently skipped."""
    env = os.environ if env is None else env
    for given, origin in ((explicit, "--config"), (env.get(CONFIG_ENV) or None, f"${CONFIG_ENV}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ConfigError(f"{origin} {str(path)!r} is not a file; write one (see `endcloud config show --help`) "
                                  f"or drop {origin}")
            return path
    if workspace_root is not None:
        path = Path(workspace_root).expanduser() / FILE_NAME
        if path.is_file():
            return path
    return None


def load_file(path: str | os.PathLike[str] | None, sections: Sequence[Section]) -> dict[str, dict[str, Any]]:
    """`{section: {key: value}}` of a TOML file (None: empty); unknown tables or keys are errors
    that list the valid ones, so a typo never passes for a default."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    by_name = {s.name: s for s in sections}
    out: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        if name not in by_name:
            raise ConfigError(f"config file {str(path)!r}: unknown table [{name}]; valid: "
                              f"{', '.join('[' + s + ']' for s in by_name)}")
        if not isinstance(table, dict):
            raise ConfigError(f"config file {str(path)!r}: {name} must be a table ([{name}]), got {table!r}")
        for key, value in table.items():
            try:
                by_name[name].key(key)
            except ConfigError as e:
                raise ConfigError(f"config file {str(path)!r}: {e}") from None
            if isinstance(value, dict):
                raise ConfigError(f"config file {str(path)!r}: [{name}] {key} must be a value, got a table")
        out[name] = dict(table)
    return out


def resolve(sections: Sequence[Section], *, file: Mapping[str, Mapping[str, Any]] | None = None,
            env: Mapping[str, str] | None = None,
            flags: Mapping[tuple[str, str], Any] | None = None) -> list[Resolved]:
    """Every setting of `sections` with the highest layer that sets it: a flag (`{(section, key):
    value}`; None means not given), then its variable (an empty one is unset), then the file,
    then the default."""
    env = os.environ if env is None else env
    file = file or {}
    flags = flags or {}
    out: list[Resolved] = []
    for s in sections:
        for k in s.keys:
            if flags.get((s.name, k.name)) is not None:
                out.append(Resolved(s.name, k, flags[(s.name, k.name)], "flag"))
            elif env.get(k.env, "") != "":
                out.append(Resolved(s.name, k, from_env_text(k, env[k.env]), "env"))
            elif k.name in file.get(s.name, {}):
                out.append(Resolved(s.name, k, file[s.name][k.name], "file"))
            else:
                out.append(Resolved(s.name, k, k.default, "default"))
    return out


def apply_to_environ(sections: Sequence[Section], file: Mapping[str, Mapping[str, Any]],
                     environ: Any = None) -> list[str]:
    """Set each variable the file names and the environment leaves unset (so env > file);
    returns the variables set. The rooms (and their worker processes) then read them as always."""
    environ = os.environ if environ is None else environ
    set_now = []
    for s in sections:
        for name, value in file.get(s.name, {}).items():
            var = s.key(name).env
            if environ.get(var, "") == "" and value is not None:
                environ[var] = env_text(value)
                set_now.append(var)
    return set_now


def values(resolved: Iterable[Resolved], section: str) -> dict[str, Any]:
    """`{key: value}` of one section, for building a room's settings object."""
    return {r.key.name: r.value for r in resolved if r.section == section}


def render(resolved: Sequence[Resolved], *, path: Path | None = None) -> str:
    """The settings in force as a table: `[section] key = value  (source: VARIABLE)`."""
    lines = [f"# config file: {path if path is not None else '(none)'}", "# precedence: flag > env > file > default"]
    current = None
    width = max((len(r.key.name) for r in resolved), default=0)
    for r in resolved:
        if r.section != current:
            current = r.section
            lines.append(f"\n[{current}]")
        origin = {"env": f"env {r.key.env}", "flag": "flag", "file": "file", "default": "default"}[r.source]
        lines.append(f"{r.key.name.ljust(width)} = {r.shown}".ljust(width + 24) + f"  # {origin}")
    return "\n".join(lines)


_COMMENT = re.compile(r"^\s*(\w+)\s*:[^#]*#\s*(.*)$")


def field_help(cls: type) -> dict[str, str]:
    """The trailing comment of each field of a dataclass: its help text (the project writes
    field docs as comments, which the runtime does not keep, so read them from the source)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    helps: dict[str, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            m = _COMMENT.match(tok.line)
            if m and m.group(1) not in helps:
                helps[m.group(1)] = m.group(2).strip()
    return helps


def dataclass_keys(cls: type, env_prefix: str, *, secrets: Iterable[str] = (), skip: Iterable[str] = (),
                   extra_help: Mapping[str, str] | None = None) -> tuple[Key, ...]:
    """Keys for a settings dataclass's scalar fields: `<env_prefix><FIELD>` variables, the
    field's default, its comment as help."""
    helps = {**field_help(cls), **(extra_help or {})}
    secrets, skip = set(secrets), set(skip)
    keys = []
    for f in dataclasses.fields(cls):
        if f.name in skip or f.default is dataclasses.MISSING:
            continue
        ann = str(f.type)
        kind = next((t for t in (int, float) if f.default is None and ann.startswith(t.__name__ + " ")), None)
        keys.append(Key(f.name, env_prefix + f.name.upper(), f.default, helps.get(f.name, ""), f.name in secrets, kind))
    return tuple(keys)
