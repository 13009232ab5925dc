"""`prepare`: chat logs in, `pairs.jsonl` + `eval.jsonl` + `sessions.jsonl` + a counted report out.

    read (parent: cut files into chunks on record/session boundaries)
      -> worker pool, in order, at most `2 x workers` chunks in flight; each chunk in
         batches, not line by line:
           parse -> clean the chunk's texts in one batch -> drop/merge per session
           -> detect language -> redact the texts the redactor's batch pre-check flags
              (one Vault per session) -> pairs as UTF-8 JSON lines + 64-bit dedupe keys
           -> the lines to a hand-over file, the keys and counts back through the pool
      -> parent: drop exact / near duplicates (fixed-size Bloom filters), copy the kept
         runs of lines from the hand-over file to pairs.jsonl / eval.jsonl, and every
         training-side session whole (every utterance, cleaned and redacted like the pairs)
         to sessions.jsonl: what pretraining reads, since pairs keep only a window of
         context and no turn after a session's last agent reply

The parent only cuts, dedupes and writes (it is the one part that does not parallelise);
everything per record happens in the workers. Memory stays flat: chunks are bounded in
number and size, the dedupe filters are sized once, and nothing keeps a per-session or
per-pair Python object after it is written. The held-out split is by a hash of the
session, so a session's pairs are all in `pairs.jsonl` or all in `eval.jsonl`, the same
on every run.

    report = prepare(["chats.txt"], "out/", workers=2)
    print(report.to_text())

Redaction uses `endcloud.privacy` (`redact(text, vault, lang=...)` with one `Vault()` per
session, so placeholders stay consistent inside a conversation). It is imported in the
workers, by module name, so a test may name a stand-in module with the same two names;
if the module also has `needs_redaction(texts, lang) -> indices`, only those texts are
redacted (the others `redact` must leave as they are, vault untouched), else every text
is, with a memo of the texts found clean.

Measured speed and what it costs where: `bench/bench_corpus.py`, docs/bench/corpus-speed.md.
"""

from __future__ import annotations

import collections
import gc
import importlib
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
from array import array
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # the C escaper json.dumps uses
from bisect import bisect_right
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from endcloud.errors import ConfigError, EndcloudError
from endcloud.fileio import atomic_write, write_json_atomic, write_text_atomic
from endcloud.text import detect_lang

from endcloud.corpus.clean import CleanConfig, assemble, clean_many, near_keys_bytes
from endcloud.corpus.dedupe import BloomFilter, key64
from endcloud.corpus.pairs import DEFAULT_MAX_CONTEXT_TURNS, escape_utf8, pair_lines_utf8
from endcloud.corpus.readers import READERS, Chunk, check_file, detect_format

DEFAULT_REDACTOR = "endcloud.privacy"
CHUNK_TIMEOUT_S = 600.0  # one chunk (1 MiB) takes well under a second; this only catches a dead worker
LANG_SAMPLE_CHARS = 400  # a session's language is decided on its opening: a few turns settle it
PAIRS_FILE, EVAL_FILE, REPORT_JSON, REPORT_TXT = "pairs.jsonl", "eval.jsonl", "report.json", "report.txt"
SESSIONS_FILE = "sessions.jsonl"  # chats JSONL: {"id", "source", "lang", "messages": [{"role", "content"}]}

Progress = Callable[[int, int, Counter], None]  # (bytes done, bytes total, counts so far)


@dataclass(frozen=True)
class PrepareConfig:
    """Options of `endcloud corpus prepare` (field docstrings are the flag help)."""

    format: str | None = None
    """Input format (ecd, jddc, jsonl, csv); auto-detected per file when not given."""
    workers: int = 2
    """Worker processes (1 = all in this process)."""
    eval_fraction: float = 0.05
    """Share of sessions held out to eval.jsonl (by a hash of the session id)."""
    lang: str = "auto"
    """Language of the pairs: zh, en, or auto (detected per session)."""
    max_context_turns: int = DEFAULT_MAX_CONTEXT_TURNS
    """Turns of context kept before the query."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    redact: bool = True
    """Pass every turn through endcloud.privacy.redact (one vault per session)."""
    redactor: str = DEFAULT_REDACTOR
    """Module providing `redact(text, vault, lang=)` and `Vault()`."""
    dedupe_capacity: int = 20_000_000
    """Most pairs the dedupe filters are sized for (memory is fixed by this, not by the input; small inputs get smaller filters)."""
    dedupe_fp_rate: float = 1e-3
    """False-positive rate of the dedupe filters at full capacity."""
    chunk_bytes: int = 1 << 20
    """Bytes of input per work chunk."""

    def __post_init__(self) -> None:
        if self.format is not None:
            READERS.get(self.format)  # unknown names fail listing the valid ones
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction!r}")
        if self.lang not in ("zh", "en", "auto"):
            raise ConfigError(f"--lang must be zh, en or auto, got {self.lang!r}")
        if self.max_context_turns < 0:
            raise ConfigError(f"--max-context-turns must be >= 0, got {self.max_context_turns!r}")
        if self.chunk_bytes < 1024:
            raise ConfigError(f"chunk_bytes must be >= 1024, got {self.chunk_bytes!r}")


# --------------------------------------------------------------------------- worker side


@dataclass(slots=True)
class ChunkResult:
    """What a worker sends back for one chunk.

    The pairs' JSON lines are `train` (pairs not held out) then `held` (the others), each
    in input order as UTF-8 lines ending in b"\\n" (JSON escapes every newline inside),
    ready to write; `train_ends` / `held_ends` are the byte offsets where each line ends,
    so the parent can cut out duplicates without splitting. A pool worker writes the two
    blobs, one after the other, to the file `part` and sends only its path: a result of
    megabytes through the pool's pipe costs several copies, and while one is in the pipe
    `multiprocessing.Pool`'s worker-handler thread spins (its wait wakes on the readable
    result pipe), which cost the parent a third of its CPU. The keys and the mask are in
    input order over all pairs, since the first of two duplicates is kept whichever file
    it is in."""

    train: bytes  # b"" when the blobs are in `part`
    held: bytes
    part: str | None  # file holding train + held + sessions (the parent reads and deletes it)
    train_nbytes: int
    train_ends: bytes  # uint32 per line
    held_ends: bytes
    n: int  # number of pairs
    eval_mask: bytes  # one byte per pair, 1 = held out
    exact: bytes  # int64 per pair (dedupe keys, see pairs.pair_lines_utf8)
    near: bytes
    stats: Counter
    nbytes: int
    maxrss_kb: int
    pid: int
    cpu_s: float  # CPU seconds this worker process has used so far
    sessions: bytes = b""  # training-side sessions as chats JSONL lines (b"" when in `part`)
    sessions_nbytes: int = 0
    n_sessions: int = 0

    def blobs(self) -> tuple[memoryview, memoryview, memoryview]:
        """(train, held, sessions); reads and deletes `part` when there is one."""
        if self.part is None:
            return memoryview(self.train), memoryview(self.held), memoryview(self.sessions)
        with open(self.part, "rb") as f:
            data = memoryview(f.read())
        os.unlink(self.part)
        cut = len(data) - self.sessions_nbytes
        return data[:self.train_nbytes], data[self.train_nbytes:cut], data[cut:]


class _Work:
    """Per-process state: the config, the redaction module (imported once), its batch
    pre-check if it has one, and otherwise a bounded memo of texts it found nothing in."""

    # Agents repeat their stock phrases thousands of times; a text with no PII redacts to
    # itself whatever the vault, so it need not be scanned again. Bounded: cleared when full.
    # Used only with a redactor that has no batch pre-check (`needs_redaction`).
    CLEAN_MEMO_MAX = 200_000

    def __init__(self, cfg: PrepareConfig, part_dir: str | None = None):
        self.cfg = cfg
        self.part_dir = part_dir  # where to write result blobs (None: keep them in the result)
        self.parts = 0
        self.privacy = importlib.import_module(cfg.redactor) if cfg.redact else None
        self.needs_redaction = _batch_gate(self.privacy) if self.privacy is not None else None
        self.eval_cut = int(cfg.eval_fraction * 2**64)
        self.clean_memo: dict[str, set[str]] = {"zh": set(), "en": set()}

    def _redact_one(self, privacy: Any, text: str, vault: Any, lang: str, stats: Counter) -> str | None:
        r = privacy.redact(text, vault, lang=lang)
        if not r.spans:
            return None
        stats["redacted_turns"] += 1
        for sp in r.spans:
            stats["pii:" + str(getattr(sp, "type", "?"))] += 1
        return r.text

    def _redact_gated(self, sessions: list[list[Any]], stats: Counter) -> None:
        """Redact, per language, only the texts the redactor's batch pre-check flags; the
        others `redact` would return unchanged without touching the vault (its contract),
        so the result is that of redacting every text with one vault per session."""
        privacy, gate = self.privacy, self.needs_redaction
        scanned = 0
        for lang in sorted({s[1] for s in sessions}):
            group = [s for s in sessions if s[1] == lang]
            texts = list(chain.from_iterable(s[3] for s in group))
            flagged = gate(texts, lang)  # type: ignore[misc]
            if not flagged:
                continue
            scanned += len(flagged)
            starts = list(accumulate((len(s[3]) for s in group), initial=0))
            g = 0
            vault = None
            for i in flagged:
                if i >= starts[g + 1]:
                    g = bisect_right(starts, i) - 1
                    vault = None
                s = group[g]
                if vault is None:
                    vault = privacy.Vault()  # type: ignore[union-attr]  # one per session
                j = i - starts[g]
                new = self._redact_one(privacy, s[3][j], vault, lang, stats)
                if new is not None:
                    s[3][j] = new
        if scanned:
            stats["redaction_scanned"] += scanned

    def _redact_memo(self, texts: list[str], lang: str, stats: Counter) -> None:
        privacy = self.privacy
        memo = self.clean_memo.setdefault(lang, set())
        vault = None
        hits = 0
        for i, text in enumerate(texts):
            if text in memo:
                hits += 1
                continue
            if vault is None:
                vault = privacy.Vault()  # type: ignore[union-attr]
            new = self._redact_one(privacy, text, vault, lang, stats)
            if new is not None:
                texts[i] = new
            else:
                if len(memo) >= self.CLEAN_MEMO_MAX:
                    memo.clear()
                memo.add(text)
        if hits:
            stats["redaction_memo_hits"] += hits

    def run(self, chunk: Chunk) -> ChunkResult:
        # A chunk makes ~10^5 short-lived lists and strings and no reference cycles: the
        # cyclic GC would only rescan them (~7% of a chunk's time). It is back on between chunks.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(chunk)
        finally:
            if was_enabled:
                gc.enable()

    def _run(self, chunk: Chunk) -> ChunkResult:
        cfg = self.cfg
        stats: Counter = Counter()
        raws = READERS.get(chunk.fmt).parse(chunk, stats)
        # Clean every text of the chunk in one batch, then drop/merge per session.
        cleaned = clean_many(list(chain.from_iterable(r.texts for r in raws)), cfg.clean, stats)
        sessions: list[list[Any]] = []  # [raw, lang, roles, texts, metas]
        pos = 0
        for raw in raws:
            k = len(raw.texts)
            roles, texts, metas = assemble(raw.roles, cleaned[pos:pos + k], raw.metas, stats)
            pos += k
            if not roles:
                stats["sessions_empty_after_clean"] += 1
                continue
            lang = cfg.lang if cfg.lang != "auto" else (raw.lang or detect_lang(*texts, sample_chars=LANG_SAMPLE_CHARS))
            sessions.append([raw, lang, roles, texts, metas])
        if self.privacy is not None:
            if self.needs_redaction is not None:
                self._redact_gated(sessions, stats)
            else:
                for s in sessions:
                    self._redact_memo(s[3], s[1], stats)
        # JSON escapes and near-duplicate keys of every text, one batch call each.
        all_texts = list(chain.from_iterable(s[3] for s in sessions))
        escaped = escape_utf8(all_texts)
        near_keys = near_keys_bytes(all_texts)
        train: list[bytes] = []
        held_out: list[bytes] = []
        whole: list[bytes] = []  # training-side sessions, every utterance
        flags = bytearray()
        exact: array = array("q")
        near: array = array("q")
        turns_out = pos = 0
        by_lang: Counter = Counter()
        for raw, lang, roles, texts, metas in sessions:
            k = len(texts)
            turns_out += k
            by_lang[lang] += 1
            enc = escaped[pos:pos + k]
            ls, ex, ne = pair_lines_utf8(
                raw.source, raw.id, lang, roles, texts, metas, max_context_turns=cfg.max_context_turns, stats=stats,
                escaped=enc, near_keys=near_keys[pos:pos + k],
            )
            pos += k
            held = int.from_bytes(key64(f"{raw.source}\x1f{raw.id}"), "little") < self.eval_cut
            if not held:
                whole.append(session_line_utf8(raw.source, raw.id, lang, roles, enc))
            if not ls:
                continue
            (held_out if held else train).extend(ls)
            flags += (b"\x01" if held else b"\x00") * len(ls)
            exact.extend(ex)
            near.extend(ne)
        stats["sessions"] += len(sessions)
        stats["utterances_out"] += turns_out
        for lang, v in by_lang.items():
            stats["sessions_" + lang] += v
        n = len(train) + len(held_out)
        stats["pairs_built"] += n
        train_blob, train_ends = _blob(train)
        held_blob, held_ends = _blob(held_out)
        sessions_blob = b"\n".join(whole) + b"\n" if whole else b""
        sessions_nbytes = len(sessions_blob)
        part = None
        if self.part_dir is not None and (n or whole):
            self.parts += 1
            part = os.path.join(self.part_dir, f"{os.getpid()}-{self.parts}.part")
            with open(part, "wb") as f:
                f.write(train_blob)
                f.write(held_blob)
                f.write(sessions_blob)
            train_nbytes = len(train_blob)
            train_blob = held_blob = sessions_blob = b""
        else:
            train_nbytes = len(train_blob)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ChunkResult(train_blob, held_blob, part, train_nbytes, train_ends, held_ends, n, bytes(flags),
                           exact.tobytes(), near.tobytes(), stats, chunk.nbytes, ru.ru_maxrss, os.getpid(),
                           ru.ru_utime + ru.ru_stime, sessions_blob, sessions_nbytes, len(whole))


_MESSAGE = {"user": b'{"role": "user", "content": %s}', "assistant": b'{"role": "assistant", "content": %s}'}


def session_line_utf8(source: str, session: str, lang: str, roles: list[str], escaped: list[bytes]) -> bytes:
    """One whole session as a chats JSONL line (UTF-8, no newline), equal to
    `json.dumps({"id", "source", "lang", "messages": [{"role", "content"}...]}, ensure_ascii=False)`,
    from the texts already JSON-escaped for the pairs."""
    msgs = b", ".join(_MESSAGE[r] % e for r, e in zip(roles, escaped))
    head = f'{{"id": {encode_basestring(session)}, "source": {encode_basestring(source)}, "lang": {encode_basestring(lang)}, "messages": ['
    return head.encode("utf-8") + msgs + b"]}"


def _blob(lines: list[bytes]) -> tuple[bytes, bytes]:
    """(the lines joined, each ending in a newline; uint32 end offsets of the lines)."""
    if not lines:
        return b"", b""
    ends = np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)) + 1)
    if ends[-1] >= 2**32:
        raise EndcloudError(f"a chunk made {ends[-1]:,} bytes of pairs; use smaller chunks")
    return b"\n".join(lines) + b"\n", ends.astype(np.uint32).tobytes()


def _batch_gate(privacy: Any) -> Callable[[list[str], str], list[int]] | None:
    """The redactor's batch pre-check `needs_redaction(texts, lang) -> indices`, if it has
    one (the built-in `endcloud.privacy` does; a stand-in module may offer its own or none)."""
    return getattr(privacy, "needs_redaction", None)


_WORK: _Work | None = None


def _public_ids() -> list[str]:
    from endcloud.privacy import public

    return sorted(public.public_values())


def _init_worker(cfg: PrepareConfig, part_dir: str, public_ids: Sequence[str] = ()) -> None:
    global _WORK
    from endcloud.privacy import public

    public.install(public_ids)  # the parent's set now, whatever the forkserver's environment held
    _WORK = _Work(cfg, part_dir)


def _run_chunk(chunk: Chunk) -> ChunkResult:
    assert _WORK is not None, "worker not initialised"
    return _WORK.run(chunk)


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """Everything `prepare` counted; `report.json` is `to_json()`, `report.txt` is `to_text()`."""

    out_dir: str
    inputs: list[dict[str, Any]]
    counts: dict[str, int]
    pii: dict[str, int]
    dedupe: dict[str, Any]
    config: dict[str, Any]
    seconds: float
    peak_rss_mb: dict[str, float]
    workers: int
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU seconds of this process ("parent": reading, dedupe, writing; with workers=1 all
    the work) and of the worker processes together ("workers"), over the run."""

    @property
    def utterances_per_s(self) -> float:
        return self.counts.get("utterances_in", 0) / self.seconds if self.seconds > 0 else 0.0

    @property
    def pairs(self) -> int:
        return self.counts.get("pairs_written", 0)

    @property
    def eval_pairs(self) -> int:
        return self.counts.get("eval_pairs_written", 0)

    def to_json(self) -> dict[str, Any]:
        c = self.counts
        # The headline numbers first, at top level, for anyone who reads only those.
        d: dict[str, Any] = {k: c.get(k, 0) for k in ("sessions", "utterances_in", "utterances_out")}
        d["pairs"], d["eval_pairs"] = self.pairs, self.eval_pairs
        d.update(asdict(self))
        d["utterances_per_s"] = round(self.utterances_per_s, 1)
        d["files"] = {"pairs": PAIRS_FILE, "eval": EVAL_FILE, "sessions": SESSIONS_FILE}
        return d

    def to_text(self) -> str:
        c = self.counts
        g = c.get
        lines = [
            f"corpus prepare -> {self.out_dir}",
            f"  inputs: " + ", ".join(f"{i['path']} ({i['format']})" for i in self.inputs),
            f"  sessions {g('sessions', 0):,}   utterances in {g('utterances_in', 0):,} -> out {g('utterances_out', 0):,}",
            f"  pairs built {g('pairs_built', 0):,} -> written {g('pairs_written', 0):,} train + {g('eval_pairs_written', 0):,} eval",
            f"  sessions written whole (training side, for pretraining) {g('sessions_written', 0):,}",
            f"  time {self.seconds:.1f} s   {self.utterances_per_s:,.0f} utterances/s   workers {self.workers}",
            f"  peak RSS: parent {self.peak_rss_mb['parent']:.0f} MB, largest worker {self.peak_rss_mb['worker_max']:.0f} MB",
            f"  CPU: parent {self.cpu_seconds.get('parent', 0):.1f} s, workers {self.cpu_seconds.get('workers', 0):.1f} s",
            "",
            "  rule                              count",
        ]
        for k in sorted(c):
            if k in ("sessions", "utterances_in", "utterances_out", "pairs_built", "pairs_written", "eval_pairs_written",
                     "sessions_written"):
                continue
            lines.append(f"  {k:<32} {c[k]:>8,}")
        if self.pii:
            lines.append("")
            lines.append("  redacted spans by type: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.pii.items())))
        lines.append("")
        lines.append(
            f"  dedupe: {self.dedupe['method']}, {self.dedupe['megabytes']} MB x2, capacity {self.dedupe['capacity']:,}, "
            f"{self.dedupe['hashes']} hashes, est. false-positive rate now {self.dedupe['estimated_fp_rate_now']:.2g}"
        )
        lines.append("")
        lines.append("  per input:")
        for i in self.inputs:
            lines.append(
                f"    {i['path']}: {i['format']}, {i['sessions']:,} sessions, {i['utterances_in']:,} utterances, "
                f"{i['pairs_written']:,} + {i['eval_pairs_written']:,} pairs"
            )
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- parent side


def _resolve_redactor(redactor: Any) -> str:
    if redactor is None:
        return DEFAULT_REDACTOR
    if isinstance(redactor, str):
        return redactor
    name = getattr(redactor, "__name__", None)
    if not name:
        raise ConfigError(f"redactor must be a module or a module name, got {redactor!r}")
    return name


def _chunks(files: list[tuple[str, str]], chunk_bytes: int) -> Iterator[tuple[int, Chunk]]:
    for idx, (path, fmt) in enumerate(files):
        for chunk in READERS.get(fmt).chunks(path, chunk_bytes):
            yield idx, chunk


def _results(
    tasks: Iterator[tuple[int, Chunk]], cfg: PrepareConfig, stack: ExitStack, part_dir: str
) -> Iterator[tuple[int, ChunkResult]]:
    """Run chunks, in order: in this process for 1 worker, else on a pool with a bounded
    number in flight (Pool.imap would read the whole input ahead of the workers)."""
    if cfg.workers == 1:
        work = _Work(cfg)
        for idx, chunk in tasks:
            yield idx, work.run(chunk)
        return
    # forkserver: workers start from a clean process (no threads from a progress display,
    # no torch), with this module preloaded so each starts fast.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["endcloud.corpus.pipeline"] + ([cfg.redactor] if cfg.redact else []))
    pool = stack.enter_context(ctx.Pool(cfg.workers, initializer=_init_worker,
                                          initargs=(cfg, part_dir, _public_ids())))
    pending: collections.deque = collections.deque()
    limit = 2 * cfg.workers

    def get(res: Any) -> ChunkResult:
        # A worker killed from outside (e.g. for memory) loses its task and Pool never
        # says so: wait a bounded time, then fail clearly instead of hanging.
        try:
            return res.get(timeout=CHUNK_TIMEOUT_S)
        except mp.TimeoutError:
            raise EndcloudError(
                f"a corpus worker gave no result within {CHUNK_TIMEOUT_S:.0f} s (killed, e.g. out of memory?); "
                "retry with --workers 1 to see the error"
            ) from None

    for idx, chunk in tasks:
        pending.append((idx, pool.apply_async(_run_chunk, (chunk,))))
        if len(pending) >= limit:
            i, res = pending.popleft()
            yield i, get(res)
    while pending:
        i, res = pending.popleft()
        yield i, get(res)


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return ru.ru_utime + ru.ru_stime


def _write_kept(f: Any, blob: memoryview, ends: bytes, keep: np.ndarray) -> int:
    """Write the lines of `blob` where `keep` is True, as runs of consecutive kept lines
    (duplicates are few, so a chunk is a few hundred slices, not thousands of lines)."""
    n = int(keep.sum())
    if n == keep.size:
        f.write(blob)
    elif n:
        bounds = np.concatenate(([0], np.frombuffer(ends, dtype=np.uint32).astype(np.int64)))
        step = np.diff(keep.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        starts = bounds[np.flatnonzero(step == 1)].tolist()
        stops = bounds[np.flatnonzero(step == -1)].tolist()
        f.write(b"".join([blob[a:b] for a, b in zip(starts, stops)]))
    return n


def prepare(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    format: str | None = None,
    workers: int = 2,
    eval_fraction: float = 0.05,
    lang: str = "auto",
    max_context_turns: int = DEFAULT_MAX_CONTEXT_TURNS,
    max_turn_chars: int = 2000,
    long_turns: str = "truncate",
    url_placeholder: str = "[URL]",
    redact: bool = True,
    redactor: Any = None,
    dedupe_capacity: int = 20_000_000,
    dedupe_fp_rate: float = 1e-3,
    chunk_bytes: int = 1 << 20,
    progress: Progress | None = None,
) -> Report:
    """Read, clean, redact and pair `inputs`; write pairs.jsonl, eval.jsonl, sessions.jsonl,
    report.json, report.txt into `out_dir` (each atomically). Returns the report.

    Raises DataError (naming file and line) for unreadable input, ConfigError or
    RegistryError for bad options. With workers > 1 the workers come from a forkserver,
    which re-imports the calling script: guard a script's top level with
    `if __name__ == "__main__":` (the `endcloud` command already is)."""
    if not inputs:
        raise ConfigError("no input files given; pass one or more chat-log files")
    try:
        clean = CleanConfig(max_turn_chars=max_turn_chars, long_turns=long_turns, url_placeholder=url_placeholder)  # type: ignore[arg-type]
    except ValueError as e:
        raise ConfigError(str(e).replace("max_turn_chars", "--max-turn-chars").replace("long_turns", "--long-turns")) from None
    cfg = PrepareConfig(
        format=format, workers=workers, eval_fraction=eval_fraction, lang=lang, max_context_turns=max_context_turns,
        clean=clean, redact=redact, redactor=_resolve_redactor(redactor), dedupe_capacity=dedupe_capacity,
        dedupe_fp_rate=dedupe_fp_rate, chunk_bytes=chunk_bytes,
    )
    # Check every input (exists, not binary, format known) before any work starts.
    files: list[tuple[str, str]] = []
    for p in inputs:
        path = str(check_file(p))
        files.append((path, cfg.format or detect_format(path)))
    if cfg.redact:
        importlib.import_module(cfg.redactor)  # fail here, clearly, not inside a worker
    total_bytes = sum(os.path.getsize(p) for p, _ in files)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # A pair takes two messages of at least a few bytes each, so small inputs get small
    # filters; big ones get the configured capacity, whatever their size beyond it.
    capacity = max(10_000, min(cfg.dedupe_capacity, total_bytes // 16))
    exact_seen = BloomFilter(capacity=capacity, fp_rate=cfg.dedupe_fp_rate)
    near_seen = BloomFilter(capacity=capacity, fp_rate=cfg.dedupe_fp_rate)
    counts: Counter = Counter()
    per_file = [Counter() for _ in files]
    done_bytes = 0
    worker_rss_kb = 0
    worker_cpu: dict[int, float] = {}  # pid -> CPU seconds at its latest result
    cpu0 = _self_cpu()
    t0 = time.perf_counter()
    with ExitStack() as stack:
        # Workers hand their pairs over in files here (see ChunkResult); gone when we are.
        part_dir = tempfile.mkdtemp(prefix=".prepare-", dir=out)
        stack.callback(shutil.rmtree, part_dir, ignore_errors=True)
        f_pairs = stack.enter_context(atomic_write(out / PAIRS_FILE, "wb"))
        f_eval = stack.enter_context(atomic_write(out / EVAL_FILE, "wb"))
        f_sessions = stack.enter_context(atomic_write(out / SESSIONS_FILE, "wb"))
        for idx, res in _results(_chunks(files, cfg.chunk_bytes), cfg, stack, part_dir):
            counts.update(res.stats)
            per_file[idx].update(res.stats)
            worker_rss_kb = max(worker_rss_kb, res.maxrss_kb)
            if cfg.workers > 1:
                worker_cpu[res.pid] = res.cpu_s
            done_bytes += res.nbytes
            n = res.n
            if res.n_sessions and not n:
                f_sessions.write(res.blobs()[2])
            if res.n_sessions:
                counts["sessions_written"] += res.n_sessions
                per_file[idx]["sessions_written"] += res.n_sessions
            if n:
                keep = exact_seen.check_and_add(np.frombuffer(res.exact, dtype=np.int64).view(np.uint64))
                n_keep = int(keep.sum())
                dup_exact = n - n_keep
                near_new = near_seen.check_and_add(np.frombuffer(res.near, dtype=np.int64).view(np.uint64)[keep])
                dup_near = n_keep - int(near_new.sum())
                keep[keep] = near_new
                held = np.frombuffer(res.eval_mask, dtype=np.bool_)
                train, held_out, whole = res.blobs()
                f_sessions.write(whole)
                if held.any():
                    n_train = _write_kept(f_pairs, train, res.train_ends, keep[~held])
                    n_eval = _write_kept(f_eval, held_out, res.held_ends, keep[held])
                else:
                    n_train, n_eval = _write_kept(f_pairs, train, res.train_ends, keep), 0
                step = Counter(
                    exact_duplicate=dup_exact, near_duplicate=dup_near, pairs_written=n_train, eval_pairs_written=n_eval
                )
                counts.update(step)
                per_file[idx].update(step)
            if progress is not None:
                progress(done_bytes, total_bytes, counts)
    seconds = time.perf_counter() - t0

    inputs_report = []
    for (path, fmt), c in zip(files, per_file):
        inputs_report.append({
            "path": path, "format": fmt, "bytes": os.path.getsize(path), "sessions": c.get("sessions", 0),
            "utterances_in": c.get("utterances_in", 0), "pairs_written": c.get("pairs_written", 0),
            "eval_pairs_written": c.get("eval_pairs_written", 0),
        })
    pii = {k[4:]: v for k, v in counts.items() if k.startswith("pii:")}
    plain = {k: int(v) for k, v in counts.items() if not k.startswith("pii:")}
    for k in ("sessions", "utterances_in", "utterances_out", "pairs_built", "pairs_written", "eval_pairs_written",
              "exact_duplicate", "near_duplicate", "sessions_written"):
        plain.setdefault(k, 0)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    dedupe = exact_seen.describe()
    dedupe["near_keys_added"] = near_seen.added
    dedupe["near_estimated_fp_rate_now"] = float(f"{near_seen.estimated_fp_rate():.3g}")
    dedupe["exact_key"] = "64-bit hash of (query, response) after cleaning and redaction"
    dedupe["near_key"] = "64-bit hash of (query, response) without punctuation, whitespace, digits and case"
    cfg_json = asdict(cfg)
    report = Report(
        out_dir=str(out),
        inputs=inputs_report,
        counts=dict(sorted(plain.items())),
        pii=dict(sorted(pii.items())),
        dedupe=dedupe,
        config=cfg_json,
        seconds=round(seconds, 3),
        peak_rss_mb={
            "parent": round(self_kb / 1024, 1),
            "worker_max": round(max(worker_rss_kb, children_kb if cfg.workers > 1 else 0) / 1024, 1),
        },
        workers=cfg.workers,
        cpu_seconds={"parent": round(_self_cpu() - cpu0, 2), "workers": round(sum(worker_cpu.values()), 2)},
    )
    write_json_atomic(out / REPORT_JSON, report.to_json())
    write_text_atomic(out / REPORT_TXT, report.to_text())
    return report
