"""`prepare`: chat logs in, `pairs.jsonl` + `eval.jsonl` + a counted report out.

    read (parent: cut files into chunks on record/session boundaries)
      -> worker pool, in order, at most `2 x workers` chunks in flight:
           parse -> clean -> detect language -> redact (one Vault per session)
           -> pairs as JSON lines + 64-bit dedupe keys + held-out flag
      -> parent: drop exact / near duplicates (fixed-size Bloom filters), write

Memory stays flat: chunks are bounded in number and size, the dedupe filters are sized
once, and nothing keeps a per-session or per-pair Python object after it is written.
The held-out split is by a hash of the session, so a session's pairs are all in
`pairs.jsonl` or all in `eval.jsonl`, the same on every run.

    report = prepare(["chats.txt"], "out/", workers=2)
    print(report.to_text())

Redaction uses `endcloud.privacy` (`redact(text, vault, lang=...)` with one `Vault()` per
session, so placeholders stay consistent inside a conversation). It is imported in the
workers, by module name, so a test may name a stand-in module with the same two names.
"""

from __future__ import annotations

import collections
import importlib
import multiprocessing as mp
import os
import resource
import time
from array import array
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from endcloud.errors import ConfigError, EndcloudError
from endcloud.fileio import atomic_write, write_json_atomic, write_text_atomic

from endcloud.corpus.clean import CleanConfig, clean_lists, detect_lang
from endcloud.corpus.dedupe import BloomFilter, key64
from endcloud.corpus.pairs import DEFAULT_MAX_CONTEXT_TURNS, pair_lines_raw
from endcloud.corpus.readers import READERS, Chunk, check_file, detect_format

DEFAULT_REDACTOR = "endcloud.privacy"
CHUNK_TIMEOUT_S = 600.0  # one chunk (1 MiB) takes well under a second; this only catches a dead worker
PAIRS_FILE, EVAL_FILE, REPORT_JSON, REPORT_TXT = "pairs.jsonl", "eval.jsonl", "report.json", "report.txt"

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
    """What a worker sends back for one chunk (cheap to pickle: strings and bytes)."""

    blob: bytes  # the pairs' JSON lines, UTF-8, joined by b"\n" (JSON escapes every newline inside)
    n: int  # number of lines in blob
    eval_mask: bytes  # one byte per line, 1 = held out
    exact: bytes  # int64 per line (dedupe keys, see pairs.pair_lines_raw)
    near: bytes
    stats: Counter
    nbytes: int
    maxrss_kb: int


class _Work:
    """Per-process state: the config, the redaction module (imported once) and a bounded
    memo of texts the redactor found nothing in."""

    # Agents repeat their stock phrases thousands of times; a text with no PII redacts to
    # itself whatever the vault, so it need not be scanned again. Bounded: cleared when full.
    CLEAN_MEMO_MAX = 200_000

    def __init__(self, cfg: PrepareConfig):
        self.cfg = cfg
        self.privacy = importlib.import_module(cfg.redactor) if cfg.redact else None
        self.eval_cut = int(cfg.eval_fraction * 2**64)
        self.clean_memo: dict[str, set[str]] = {"zh": set(), "en": set()}

    def _redact(self, texts: list[str], lang: str, stats: Counter) -> None:
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
            r = privacy.redact(text, vault, lang=lang)  # type: ignore[union-attr]
            if r.spans:
                stats["redacted_turns"] += 1
                for sp in r.spans:
                    stats["pii:" + str(getattr(sp, "type", "?"))] += 1
                texts[i] = r.text
            else:
                if len(memo) >= self.CLEAN_MEMO_MAX:
                    memo.clear()
                memo.add(text)
        if hits:
            stats["redaction_memo_hits"] += hits

    def run(self, chunk: Chunk) -> ChunkResult:
        cfg = self.cfg
        clean_cfg = cfg.clean
        stats: Counter = Counter()
        raws = READERS.get(chunk.fmt).parse(chunk, stats)
        lines: list[str] = []
        flags = bytearray()
        exact: array = array("q")
        near: array = array("q")
        sessions = turns_out = 0
        by_lang: Counter = Counter()
        for raw in raws:
            roles, texts, metas = clean_lists(raw.roles, raw.texts, raw.metas, clean_cfg, stats)
            if not roles:
                stats["sessions_empty_after_clean"] += 1
                continue
            lang = cfg.lang if cfg.lang != "auto" else (raw.lang or detect_lang(texts))
            if self.privacy is not None:
                self._redact(texts, lang, stats)
            sessions += 1
            turns_out += len(roles)
            by_lang[lang] += 1
            ls, ex, ne = pair_lines_raw(
                raw.source, raw.id, lang, roles, texts, metas, max_context_turns=cfg.max_context_turns, stats=stats
            )
            if not ls:
                continue
            held = int.from_bytes(key64(f"{raw.source}\x1f{raw.id}"), "little") < self.eval_cut
            lines += ls
            flags += (b"\x01" if held else b"\x00") * len(ls)
            exact.extend(ex)
            near.extend(ne)
        stats["sessions"] += sessions
        stats["utterances_out"] += turns_out
        for lang, v in by_lang.items():
            stats["sessions_" + lang] += v
        stats["pairs_built"] += len(lines)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # One bytes object pickles as a memcpy; a list of lines would be framed line by line.
        blob = "\n".join(lines).encode("utf-8")
        return ChunkResult(blob, len(lines), bytes(flags), exact.tobytes(), near.tobytes(), stats, chunk.nbytes, rss)


_WORK: _Work | None = None


def _init_worker(cfg: PrepareConfig) -> None:
    global _WORK
    _WORK = _Work(cfg)


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
        d["files"] = {"pairs": PAIRS_FILE, "eval": EVAL_FILE}
        return d

    def to_text(self) -> str:
        c = self.counts
        g = c.get
        lines = [
            f"corpus prepare -> {self.out_dir}",
            f"  inputs: " + ", ".join(f"{i['path']} ({i['format']})" for i in self.inputs),
            f"  sessions {g('sessions', 0):,}   utterances in {g('utterances_in', 0):,} -> out {g('utterances_out', 0):,}",
            f"  pairs built {g('pairs_built', 0):,} -> written {g('pairs_written', 0):,} train + {g('eval_pairs_written', 0):,} eval",
            f"  time {self.seconds:.1f} s   {self.utterances_per_s:,.0f} utterances/s   workers {self.workers}",
            f"  peak RSS: parent {self.peak_rss_mb['parent']:.0f} MB, largest worker {self.peak_rss_mb['worker_max']:.0f} MB",
            "",
            "  rule                              count",
        ]
        for k in sorted(c):
            if k in ("sessions", "utterances_in", "utterances_out", "pairs_built", "pairs_written", "eval_pairs_written"):
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
    tasks: Iterator[tuple[int, Chunk]], cfg: PrepareConfig, stack: ExitStack
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
    pool = stack.enter_context(ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,)))
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


def prepare(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    format: str | None = None,
    workers: int = 2,
    eval_fraction: float = 0.05,
    lang: str = "auto",
    max_context_turns: int = DEFAULT_MAX_CONTEXT_TURNS,
    max_turn_chars: int = 512,
    long_turns: str = "truncate",
    url_placeholder: str = "[URL]",
    redact: bool = True,
    redactor: Any = None,
    dedupe_capacity: int = 20_000_000,
    dedupe_fp_rate: float = 1e-3,
    chunk_bytes: int = 1 << 20,
    progress: Progress | None = None,
) -> Report:
    """Read, clean, redact and pair `inputs`; write pairs.jsonl, eval.jsonl, report.json,
    report.txt into `out_dir` (each atomically). Returns the report.

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
    t0 = time.perf_counter()
    with ExitStack() as stack:
        f_pairs = stack.enter_context(atomic_write(out / PAIRS_FILE, "wb"))
        f_eval = stack.enter_context(atomic_write(out / EVAL_FILE, "wb"))
        for idx, res in _results(_chunks(files, cfg.chunk_bytes), cfg, stack):
            counts.update(res.stats)
            per_file[idx].update(res.stats)
            worker_rss_kb = max(worker_rss_kb, res.maxrss_kb)
            done_bytes += res.nbytes
            n = res.n
            if n:
                keep = exact_seen.check_and_add(np.frombuffer(res.exact, dtype=np.int64).view(np.uint64))
                dup_exact = n - int(keep.sum())
                near_new = near_seen.check_and_add(np.frombuffer(res.near, dtype=np.int64).view(np.uint64)[keep])
                dup_near = int(keep.sum()) - int(near_new.sum())
                keep[keep] = near_new
                held = np.frombuffer(res.eval_mask, dtype=np.uint8).astype(bool)
                train_sel = keep & ~held
                eval_sel = keep & held
                n_train = int(train_sel.sum())
                n_eval = int(eval_sel.sum())
                if n_train == n:
                    f_pairs.write(res.blob + b"\n")
                elif n_train or n_eval:
                    lines = res.blob.split(b"\n")
                    if n_train:
                        f_pairs.write(b"\n".join([lines[i] for i in np.flatnonzero(train_sel)]) + b"\n")
                    if n_eval:
                        f_eval.write(b"\n".join([lines[i] for i in np.flatnonzero(eval_sel)]) + b"\n")
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
              "exact_duplicate", "near_duplicate"):
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
    )
    write_json_atomic(out / REPORT_JSON, report.to_json())
    write_text_atomic(out / REPORT_TXT, report.to_text())
    return report
