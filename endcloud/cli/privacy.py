"""CLI commands of the `privacy` room: `endcloud redact`, `endcloud unredact`, and what the
shop keeps at rest: `endcloud privacy forget` (a customer's right to erasure) and
`endcloud privacy retain` (a retention period).

    $ echo "我叫张伟，电话13800138000" | endcloud redact
    我叫[NAME_1]，电话[PHONE_1]
    $ endcloud redact --json --vault v.json < chats.txt > redacted.jsonl
    $ endcloud unredact --vault v.json < replies.txt
    $ endcloud privacy forget --customer u42 -w endcloud-work            # delete everything about u42
    $ endcloud privacy forget --customer u42 --mode redact               # keep the turns, scrubbed, pseudonymous
    $ endcloud privacy retain --days 180 -w endcloud-work --audit        # (or $ENDCLOUD_RETENTION_DAYS)

Vault files (placeholder -> value) outside the database are swept too: every
`<workspace>/vaults/*.json` and each `--vault PATH`, dropping the entries that hold a value
found in the forgotten customer's messages or profile.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any, Iterator, Optional

import typer

from endcloud.errors import ConfigError, DataError

_LANGS = ("zh", "en", "auto")
RETENTION_ENV = "ENDCLOUD_RETENTION_DAYS"
privacy_app = typer.Typer(help="What the shop keeps about people: forget a customer, enforce a retention period.",
                          no_args_is_help=True)


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


def _db(workspace: Path | None) -> tuple[Any, Path]:
    from endcloud.config import Workspace

    ws = Workspace.resolve(workspace)
    if not ws.db.is_file():
        raise ConfigError(f"no workspace database at {ws.db}; pass --workspace (-w) the folder `endcloud serve` used")
    return ws, ws.db


def _scrub(text: str) -> str:
    from endcloud.privacy import redact

    return redact(text).text


def _known_values(db: Path, customer: str) -> dict[str, str]:
    """value -> type: what the detectors find in the customer's messages and profile, and their order ids."""
    from endcloud.privacy import detect
    from endcloud.store.forget import customer_order_ids, customer_texts

    known = {oid: "ORDER" for oid in customer_order_ids(db, customer)}
    for t in customer_texts(db, customer):
        known.update((sp.value, sp.type) for sp in detect(t))
    return known


def _print_report(report: Any, extra: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json() | extra, ensure_ascii=False))
        return
    verb = "deleted" if report.mode == "delete" else "scrubbed"
    rows = ", ".join(f"{t} {n}" for t, n in sorted(report.counts.items())) or "nothing found"
    typer.echo(f"{verb}: {rows}")
    for k, v in extra.items():
        typer.echo(f"{k}: {v}")
    for note in report.notes:
        typer.echo(f"note: {note}")


def _vault_files(ws: Any, extra: list[Path]) -> list[Path]:
    found = sorted((ws.root / "vaults").glob("*.json")) if (ws.root / "vaults").is_dir() else []
    for p in extra:
        if not p.is_file():
            raise ConfigError(f"--vault {str(p)!r} is not a file")
        found.append(p)
    return list(dict.fromkeys(found))


def forget_command(
    customer: str = typer.Option(..., "--customer", "-c", help="The customer id (the `user` the server was given)."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
    mode: str = typer.Option("delete", "--mode", help="delete: remove the rows; redact: keep them scrubbed under a random pseudonym (the profile is deleted either way)."),
    vaults: list[Path] = typer.Option([], "--vault", help="Also drop the customer's values from this vault file (repeatable); <workspace>/vaults/*.json always."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Forget one customer: conversations, replies, feedback, profile, the lessons and review items made from them, vault entries."""
    from endcloud.privacy import Vault
    from endcloud.privacy.redact import scrubber
    from endcloud.store.forget import MODES, forget_customer

    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    ws, db = _db(workspace)
    files = _vault_files(ws, vaults)
    # the customer's values: dropped from vault files, and (redact mode) replaced wherever they
    # recur in the customer's rows, even where no rule would find them again ("张伟不满意")
    values = _known_values(db, customer)
    report = forget_customer(db, customer, mode=mode, scrub=scrubber(values))
    swept = 0
    for path in files:
        try:
            vault = Vault.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"not a JSON vault ({e})", path=str(path)) from None
        n = vault.forget(values)
        if n:
            from endcloud.fileio import write_json_atomic

            write_json_atomic(path, vault.to_json())
            swept += n
    _print_report(report, {"vault_entries_removed": swept, "vault_files": len(files)}, as_json)


def retain_command(
    days: Optional[float] = typer.Option(None, "--days", help=f"Keep this many days of conversations (default ${RETENTION_ENV})."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
    mode: str = typer.Option("delete", "--mode", help="delete the older turns, or redact them in place."),
    audit: bool = typer.Option(False, "--audit", help="Also drop audit-log records (audit/outbound.jsonl) older than the period."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Delete (or redact) conversations older than the retention period, with what was derived from them."""
    import os
    import time

    from endcloud.privacy import AuditLog
    from endcloud.store.forget import MODES, retain

    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if days is None:
        raw = os.environ.get(RETENTION_ENV)
        if not raw:
            raise ConfigError(f"how long to keep conversations? pass --days N or set ${RETENTION_ENV}")
        try:
            days = float(raw)
        except ValueError:
            raise ConfigError(f"${RETENTION_ENV} must be a number of days, got {raw!r}") from None
    if days < 0:
        raise ConfigError(f"--days must be >= 0, got {days!r}")
    ws, db = _db(workspace)
    before = time.time() - days * 86400.0
    report = retain(db, before=before, mode=mode, scrub=_scrub)
    extra = {"cutoff_days": days}
    if audit:
        extra["audit_records_removed"] = AuditLog(ws.audit).prune(before)
    _print_report(report, extra, as_json)


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.command("redact")(redact_command)
    app.command("unredact")(unredact_command)
    privacy_app.command("forget")(forget_command)
    privacy_app.command("retain")(retain_command)
    app.add_typer(privacy_app, name="privacy")
