"""CLI commands of the `privacy` room: `endcloud redact` and `endcloud unredact`.

    $ echo "我叫张伟，电话13800138000" | endcloud redact
    我叫[NAME_1]，电话[PHONE_1]
    $ endcloud redact --json --vault v.json < chats.txt > redacted.jsonl
    $ endcloud unredact --vault v.json < replies.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Iterator

import typer

from endcloud.errors import ConfigError, DataError

_LANGS = ("zh", "en", "auto")


def _stdin_lines() -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending); invalid UTF-8 is a DataError naming the line."""
    stream: IO = getattr(sys.stdin, "buffer", None) or sys.stdin
    for lineno, raw in enumerate(stream, 1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); convert the input to UTF-8, e.g. iconv -f gb18030 -t utf-8",
                    path="<stdin>", line=lineno,
                ) from None
        yield lineno, raw.rstrip("\n").removesuffix("\r")


def redact_command(
    as_json: bool = typer.Option(False, "--json", help='One JSON object per line: {"text": redacted, "spans": [{"start","end","type","label"}]}.'),
    show_values: bool = typer.Option(False, "--show-values", help="With --json, also print each span's raw value (personal data: keep it local)."),
    lang: str = typer.Option("auto", "--lang", help="Language rules for names and addresses: zh, en or auto (both)."),
    vault_path: Path | None = typer.Option(None, "--vault", help="Write the vault (placeholder -> original value) as JSON here, for `endcloud unredact`."),
) -> None:
    """Redact personal data in lines read from stdin; one vault per run keeps placeholders stable across lines."""
    from endcloud.fileio import write_json_atomic
    from endcloud.privacy import Vault, redact

    if lang not in _LANGS:
        raise ConfigError(f"--lang must be one of {', '.join(_LANGS)}, got {lang!r}")
    if show_values and not as_json:
        raise ConfigError("--show-values only applies with --json; add --json or drop --show-values")
    vault = Vault()
    out = sys.stdout
    for _lineno, line in _stdin_lines():
        r = redact(line, vault, None if lang == "auto" else lang)
        if as_json:
            obj = {"text": r.text, "spans": [s.to_json(with_value=show_values) for s in r.spans]}
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        else:
            out.write(r.text + "\n")
    out.flush()
    if vault_path is not None:
        write_json_atomic(vault_path, vault.to_json())


def unredact_command(
    vault_path: Path = typer.Option(..., "--vault", help="The vault JSON written by `endcloud redact --vault`."),
) -> None:
    """Put the original values back into placeholder text read from stdin."""
    from endcloud.privacy import Vault

    if not vault_path.is_file():
        raise ConfigError(f"--vault {str(vault_path)!r} is not a file; write one with `endcloud redact --vault PATH`")
    try:
        data = json.loads(vault_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"not a JSON vault ({e})", path=str(vault_path)) from None
    vault = Vault.from_json(data)
    out = sys.stdout
    for _lineno, line in _stdin_lines():
        out.write(vault.restore(line) + "\n")
    out.flush()


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.command("redact")(redact_command)
    app.command("unredact")(unredact_command)
