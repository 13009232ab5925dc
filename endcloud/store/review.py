"""The human review track: replies to review, reviewers' verdicts and 1–5 ratings.

The second judge of the end model (beside the automatic score) is people. This module
keeps their work in the workspace database with who and when, moves it in and out as
CSV or JSONL, and turns corrections into training labels.

    store = ReviewStore(workspace.db)
    iid = store.add_item(message_id="m1", query="能换快递吗", end_reply="你好",
                         cloud_reply="亲，默认中通快递哦", score=score, reason="final < τ")
    store.pending()                                   # what the review page lists
    store.verdict(iid, "edit", reviewer="lin", corrected_text="亲，默认发中通快递，暂不支持指定哦")
    store.rate("m1", 2, rater="lin")
    store.corrections_as_labels()                     # -> [records.Label] for the next training round
    store.export("reviews.jsonl", "verdicts"); other.import_("reviews.jsonl", "verdicts")

Tables (created on first use): review_items, review_verdicts, review_ratings. Imports
are idempotent: a verdict or rating already present (same item/target, person and time)
is skipped.

Exports, like the review page, show customers' text redacted (`[PHONE_1]`, `[NAME_1]`, one
vault per item so an item's placeholders are stable): `export(..., reveal=True)` writes
the values, and `revealed_value(item, placeholder)` gives an admin one value back.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

from endcloud.errors import DataError
from endcloud.fileio import read_jsonl, write_jsonl_atomic, write_text_atomic
from endcloud.records import Label, Turn
from endcloud.store.db import connect, ensure_schema

VERDICTS = ("approve", "edit", "reject")
KINDS = ("items", "verdicts", "ratings")

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_items (
    id TEXT PRIMARY KEY,
    message_id TEXT,
    query TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT '[]',
    end_reply TEXT NOT NULL,
    cloud_reply TEXT,
    sim REAL, match REAL, cloud_match REAL, final REAL,
    reason TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'pending',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS review_items_status ON review_items(status, created_at);
CREATE TABLE IF NOT EXISTS review_verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL REFERENCES review_items(id),
    verdict TEXT NOT NULL CHECK (verdict IN ('approve', 'edit', 'reject')),
    corrected_text TEXT,
    reviewer TEXT NOT NULL,
    note TEXT,
    created_at REAL NOT NULL,
    UNIQUE (item_id, reviewer, created_at)
);
CREATE TABLE IF NOT EXISTS review_ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    rater TEXT NOT NULL,
    model TEXT,
    comment TEXT,
    created_at REAL NOT NULL,
    UNIQUE (target_id, rater, created_at)
);
"""


@dataclass
class ReviewItem:
    """A reply put up for review, with the automatic scores and why it was picked."""

    id: str
    message_id: str | None
    query: str
    end_reply: str
    cloud_reply: str | None = None
    context: list[dict[str, str]] = field(default_factory=list)
    sim: float | None = None
    match: float | None = None
    cloud_match: float | None = None
    final: float | None = None
    reason: str = ""
    status: str = "pending"  # pending | approve | edit | reject (the latest verdict)
    created_at: float = 0.0


@dataclass
class Verdict:
    """A reviewer's decision on an item; `corrected_text` is the reply they would have sent."""

    item_id: str
    verdict: str
    reviewer: str
    corrected_text: str | None = None
    note: str | None = None
    created_at: float = 0.0
    id: int | None = None


@dataclass
class Rating:
    """A 1–5 rating of a served reply or eval cell (`target_id`: message id or eval id)."""

    target_id: str
    rating: int
    rater: str
    model: str | None = None
    comment: str | None = None
    created_at: float = 0.0
    id: int | None = None


_CLASSES = {"items": ReviewItem, "verdicts": Verdict, "ratings": Rating}


class ReviewStore:
    """Review items, verdicts and ratings in the workspace SQLite database (WAL)."""

    def __init__(self, db: str | os.PathLike[str] | sqlite3.Connection, *, clock: Callable[[], float] = time.time):
        self.conn = db if isinstance(db, sqlite3.Connection) else connect(db)
        self.clock = clock
        ensure_schema(self.conn, SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # ---- writing ----------------------------------------------------------------------
    def add_item(self, *, query: str, end_reply: str, cloud_reply: str | None = None, message_id: str | None = None,
                 score: Any = None, reason: str = "", context: list[dict[str, str]] | None = None,
                 item_id: str | None = None) -> str:
        """Queue a reply for review; `score` is a `records.Score` or a dict with sim/match/cloud_match/final."""
        s = score.to_json() if hasattr(score, "to_json") else (score or {})
        item_id = item_id or uuid.uuid4().hex[:16]
        self.conn.execute(
            "INSERT INTO review_items (id, message_id, query, context, end_reply, cloud_reply, sim, match, cloud_match, final, reason, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (item_id, message_id, query, json.dumps(context or [], ensure_ascii=False), end_reply, cloud_reply,
             s.get("sim"), s.get("match"), s.get("cloud_match"), s.get("final"), reason, self.clock()))
        return item_id

    def verdict(self, item_id: str, verdict: str, *, reviewer: str, corrected_text: str | None = None, note: str | None = None) -> int:
        """Record a decision; the item's status becomes the verdict. Returns the verdict's id."""
        if verdict not in VERDICTS:
            raise DataError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        if not reviewer or not reviewer.strip():
            raise DataError("a verdict needs the reviewer's name (who decided)")
        if verdict == "edit" and not (corrected_text and corrected_text.strip()):
            raise DataError(f"verdict 'edit' on item {item_id!r} needs the corrected text")
        self.get(item_id)  # a clear error for an unknown item, before the foreign key's
        return self._insert_verdict(Verdict(item_id=item_id, verdict=verdict, reviewer=reviewer.strip(),
                                            corrected_text=corrected_text, note=note, created_at=self.clock()))

    def _insert_verdict(self, v: Verdict) -> int:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO review_verdicts (item_id, verdict, corrected_text, reviewer, note, created_at) VALUES (?,?,?,?,?,?)",
                (v.item_id, v.verdict, v.corrected_text, v.reviewer, v.note, v.created_at))
            # The item shows its latest verdict (an older imported one must not win).
            self.conn.execute(
                "UPDATE review_items SET status = (SELECT verdict FROM review_verdicts WHERE item_id = ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1) WHERE id = ?", (v.item_id, v.item_id))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return int(cur.lastrowid) if cur.rowcount else 0

    def rate(self, target_id: str, rating: int, *, rater: str, model: str | None = None, comment: str | None = None) -> int:
        """Record a 1–5 rating of a served reply (message id) or an eval cell (input id + model)."""
        if isinstance(rating, bool) or int(rating) != rating or not 1 <= int(rating) <= 5:
            raise DataError(f"rating must be an integer 1–5, got {rating!r}")
        if not rater or not rater.strip():
            raise DataError("a rating needs the rater's name (who rated)")
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO review_ratings (target_id, rating, rater, model, comment, created_at) VALUES (?,?,?,?,?,?)",
            (target_id, int(rating), rater.strip(), model, comment, self.clock()))
        return int(cur.lastrowid)

    # ---- reading ----------------------------------------------------------------------
    def get(self, item_id: str) -> ReviewItem:
        row = self.conn.execute("SELECT * FROM review_items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise DataError(f"no review item {item_id!r}; list them with `endcloud review export`")
        return _item(row)

    def items(self, status: str | None = None, limit: int | None = None) -> list[ReviewItem]:
        sql, args = "SELECT * FROM review_items", []
        if status:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY created_at, id" + (f" LIMIT {int(limit)}" if limit else "")
        return [_item(r) for r in self.conn.execute(sql, args)]

    def pending(self, limit: int = 50) -> list[ReviewItem]:
        """The oldest items still waiting for a verdict."""
        return self.items("pending", limit)

    def verdicts(self, item_id: str | None = None) -> list[Verdict]:
        sql = "SELECT * FROM review_verdicts" + (" WHERE item_id = ?" if item_id else "") + " ORDER BY created_at, id"
        return [Verdict(**{k: r[k] for k in r.keys()}) for r in self.conn.execute(sql, (item_id,) if item_id else ())]

    def ratings(self) -> list[Rating]:
        return [Rating(**{k: r[k] for k in r.keys()}) for r in self.conn.execute("SELECT * FROM review_ratings ORDER BY created_at, id")]

    def corrections_as_labels(self, *, include_approved: bool = False) -> list[Label]:
        """The latest 'edit' of each item as a training label (the corrected text);
        with `include_approved`, approved end replies too. Rejected items give nothing."""
        out = []
        for item in self.items():
            vs = self.verdicts(item.id)
            if not vs:
                continue
            last = vs[-1]
            if last.verdict == "edit":
                text = last.corrected_text
            elif last.verdict == "approve" and include_approved:
                text = item.end_reply
            else:
                continue
            ctx = [Turn(role=m.get("role", "user"), text=m.get("content", m.get("text", ""))) for m in item.context]
            out.append(Label(id=f"review-{item.id}", query=item.query, context=ctx, label=text or "", teacher=f"human:{last.reviewer}"))
        return out

    # ---- exchange ---------------------------------------------------------------------
    def export(self, path: str | os.PathLike[str], kind: str = "verdicts", *, reveal: bool = False) -> int:
        """Write one kind (items | verdicts | ratings) as .csv or .jsonl (by suffix); returns rows.
        Customers' text is redacted unless `reveal`."""
        rows = [asdict(x) for x in self._rows(kind)]
        if not reveal:
            if kind == "items":
                rows = [redacted_row(r, kind) for r in rows]
            else:  # a verdict or rating speaks of its item: hide the item's values in it the same way
                items = {i.id: i for i in self.items()}
                by_message = {i.message_id: i for i in items.values() if i.message_id}
                vaults: dict[str, Any] = {}

                def vault_of(item: ReviewItem | None) -> Any:
                    if item is None:
                        return None
                    if item.id not in vaults:
                        vaults[item.id] = _item_vault(asdict(item))[1]
                    return vaults[item.id]

                key = "item_id" if kind == "verdicts" else "target_id"
                lookup = items if kind == "verdicts" else by_message
                rows = [redacted_row(r, kind, vault_of(lookup.get(r.get(key)))) for r in rows]
        fmt = _format(path)
        if fmt == "jsonl":
            return write_jsonl_atomic(path, rows)
        names = [f.name for f in fields(_CLASSES[kind])]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v, ensure_ascii=False) if k == "context" else ("" if v is None else v) for k, v in r.items()})
        write_text_atomic(path, buf.getvalue())
        return len(rows)

    def import_(self, path: str | os.PathLike[str], kind: str = "verdicts") -> int:
        """Read rows written by `export` (or by hand); returns how many were new."""
        path = Path(path)
        if not path.exists():
            raise DataError("file not found", path=str(path))
        if _format(path) == "jsonl":
            raw = [(n, d) for n, d in enumerate(read_jsonl(path), 1)]
        else:
            with open(path, encoding="utf-8", newline="") as f:
                raw = [(n, {k: (v if v != "" else None) for k, v in d.items()}) for n, d in enumerate(csv.DictReader(f), 2)]
        before = self._count(kind)
        for line, d in raw:
            try:
                self._import_one(kind, d)
            except (KeyError, TypeError, ValueError, sqlite3.IntegrityError, DataError) as e:
                raise DataError(f"cannot import this {kind[:-1]}: {e}", path=str(path), line=line) from None
        return self._count(kind) - before

    def _import_one(self, kind: str, d: dict[str, Any]) -> None:
        if kind == "items":
            ctx = d.get("context") or []
            ctx = json.loads(ctx) if isinstance(ctx, str) else ctx
            num = lambda k: None if d.get(k) is None else float(d[k])  # noqa: E731
            self.conn.execute(
                "INSERT OR IGNORE INTO review_items (id, message_id, query, context, end_reply, cloud_reply, sim, match, cloud_match, final,"
                " reason, status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (d["id"], d.get("message_id"), d["query"], json.dumps(ctx, ensure_ascii=False), d["end_reply"], d.get("cloud_reply"),
                 num("sim"), num("match"), num("cloud_match"), num("final"), d.get("reason") or "", d.get("status") or "pending",
                 float(d.get("created_at") or self.clock())))
        elif kind == "verdicts":
            if d["verdict"] not in VERDICTS:
                raise DataError(f"verdict must be one of {', '.join(VERDICTS)}, got {d['verdict']!r}")
            self.get(d["item_id"])
            self._insert_verdict(Verdict(item_id=d["item_id"], verdict=d["verdict"], reviewer=d["reviewer"], corrected_text=d.get("corrected_text"),
                                         note=d.get("note"), created_at=float(d.get("created_at") or self.clock())))
        else:
            rating = float(d["rating"])
            if rating != int(rating) or not 1 <= rating <= 5:
                raise DataError(f"rating must be an integer 1–5, got {d['rating']!r}")
            self.conn.execute(
                "INSERT OR IGNORE INTO review_ratings (target_id, rating, rater, model, comment, created_at) VALUES (?,?,?,?,?,?)",
                (d["target_id"], int(rating), d["rater"], d.get("model"), d.get("comment"), float(d.get("created_at") or self.clock())))

    def _rows(self, kind: str) -> Iterable[Any]:
        if kind == "items":
            return self.items()
        if kind == "verdicts":
            return self.verdicts()
        if kind == "ratings":
            return self.ratings()
        raise DataError(f"review export kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def _count(self, kind: str) -> int:
        if kind not in KINDS:
            raise DataError(f"review import kind must be one of {', '.join(KINDS)}, got {kind!r}")
        table = {"items": "review_items", "verdicts": "review_verdicts", "ratings": "review_ratings"}[kind]
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


# the fields of each kind that hold what customers wrote (or replies to it)
TEXT_FIELDS = {"items": ("query", "end_reply", "cloud_reply"), "verdicts": ("corrected_text", "note"), "ratings": ("comment",)}


def _item_vault(row: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    # One vault per item, filled in reading order (context, query, replies): the same item always
    # gets the same placeholders, so a value revealed on the page is the one the export hides. A
    # value found once ("收件人：张伟") is hidden wherever else the item repeats it ("好的张伟").
    from endcloud.privacy import Vault, redact

    vault = Vault()
    ctx = [dict(m, content=redact(m["content"], vault).text) if isinstance(m.get("content"), str) else m
           for m in row.get("context") or []]
    fields_ = {k: redact(row[k], vault).text for k in TEXT_FIELDS["items"] if isinstance(row.get(k), str)}
    out = dict(row, **{k: _known(v, vault) for k, v in fields_.items()})
    out["context"] = [dict(m, content=_known(m["content"], vault)) if isinstance(m.get("content"), str) else m for m in ctx]
    return out, vault


def _known(text: str, vault: Any) -> str:
    """`text` (already redacted with `vault`) with any value the vault holds replaced where it recurs."""
    for ph, _t, value in sorted(vault.items(), key=lambda x: -len(x[2])):
        if len(value) >= 2 and value in text:
            text = text.replace(value, ph)
    return text


def redacted_row(row: dict[str, Any], kind: str = "items", vault: Any = None) -> dict[str, Any]:
    """`row` (an item, verdict or rating as a dict) with customers' personal data replaced by
    placeholders; a verdict or rating uses its item's `vault` when given (the same placeholders)."""
    if kind == "items":
        return _item_vault(row)[0]
    from endcloud.privacy import Vault, redact

    vault = vault if vault is not None else Vault()
    return {k: _known(redact(v, vault).text, vault) if k in TEXT_FIELDS.get(kind, ()) and isinstance(v, str) else v
            for k, v in row.items()}


def revealed_value(item: ReviewItem, placeholder: str) -> str | None:
    """The value behind `placeholder` in the redacted view of `item` (None: no such placeholder)."""
    return _item_vault(asdict(item))[1].value(placeholder)


def _format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise DataError(f"review files are .csv or .jsonl, got {str(path)!r}")


def _item(row: sqlite3.Row) -> ReviewItem:
    d = {k: row[k] for k in row.keys()}
    d["context"] = json.loads(d["context"] or "[]")
    return ReviewItem(**d)
