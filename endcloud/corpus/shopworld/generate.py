"""Write a synthetic shop pack: knowledge files, chat logs (JDDC + JSONL) and a held-out eval set.

    from endcloud.corpus.shopworld import generate_shop
    summary = generate_shop("shop/", lang="zh", sessions=2000, seed=0)

or `endcloud shop new shop/ --lang en --sessions 100000`. Sessions are drawn and written in
chunks, never held together, so 1M sessions need no more memory than 1k. The same
arguments give the same bytes: every random draw comes from RNGs seeded from (lang, seed).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from endcloud.corpus.shopworld.chats import INTENTS, Drawer, Exchange, join_lines
from endcloud.corpus.shopworld.lexicon import PROBE_SKU
from endcloud.corpus.shopworld.world import CATALOG_COLUMNS, ORDER_COLUMNS, World, build_world
from endcloud.errors import ConfigError
from endcloud.fileio import atomic_write, write_text_atomic
from endcloud.kb.pack import LANGUAGES, POLICY_KEYS

PACK_FILES = ("shop.yaml", "catalog.csv", "faq.jsonl", "policies.md", "orders.csv")
CHUNK = 2000  # sessions per buffered write

# The six inputs of the paper's Tables III, V and VI, with the intent each one is.
PROBES = {
    "en": [
        ("greeting", "Hello"),
        ("courier", "Can I choose the delivery service?"),
        ("bare_number", PROBE_SKU),
        ("coupon", "Can I get a discount?"),
        ("complaint", "This is so frustrating. I've been waiting for this delivery since yesterday and haven't dared to leave the house."),
        ("ship_today", "Will you ship the order if I purchase it today?"),
    ],
    "zh": [
        ("greeting", "你好"),
        ("courier", "可以选快递吗？"),
        ("bare_number", PROBE_SKU),
        ("coupon", "能便宜点吗？"),
        ("complaint", "真的太让人着急了，从昨天就一直等这个快递，都不敢出门。"),
        ("ship_today", "今天买的话今天能发货吗？"),
    ],
}


@dataclass
class ShopSummary:
    """What `generate_shop` wrote."""

    out_dir: str
    lang: str
    seed: int
    name: str
    sessions: int
    turns: int
    products: int
    orders: int
    faq: int
    eval_items: int
    wrong_replies: int
    replies: int
    intents: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def wrong_rate(self) -> float:
        return self.wrong_replies / self.replies if self.replies else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["wrong_rate"] = round(self.wrong_rate, 4)
        return d


def _check_args(lang: str, sessions: int, products: int, wrong_rate: float, eval_per_intent: int, workers: int) -> None:
    if lang not in LANGUAGES:
        raise ConfigError(f"--lang must be one of {', '.join(LANGUAGES)}, got {lang!r}")
    if not isinstance(sessions, int) or sessions < 0:
        raise ConfigError(f"--sessions must be a whole number >= 0, got {sessions!r}")
    if not isinstance(products, int) or products < 1:
        raise ConfigError(f"--products must be >= 1, got {products!r}")
    if not 0.0 <= wrong_rate <= 1.0:
        raise ConfigError(f"--wrong-rate must be between 0 and 1, got {wrong_rate!r}")
    if eval_per_intent < 0:
        raise ConfigError(f"eval_per_intent must be >= 0, got {eval_per_intent!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers!r}")


def generate_shop(
    out_dir: str | Path,
    *,
    lang: str = "zh",
    sessions: int = 2000,
    products: int = 40,
    seed: int = 0,
    wrong_rate: float = 0.18,
    eval_per_intent: int = 20,
    force: bool = False,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ShopSummary:
    """Write a shop pack with `sessions` chat sessions to `out_dir`; return what was written.

    `progress(n)` is called with the number of sessions written so far after each chunk.
    `workers > 1` draws chunks in that many processes; the bytes written are the same.
    A non-empty `out_dir` is refused unless `force` (then only this generator's files are replaced).
    """
    _check_args(lang, sessions, products, wrong_rate, eval_per_intent, workers)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} is a file, not a folder; choose another OUT")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"output folder {str(out)!r} is not empty; choose an empty OUT or pass --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    stale = out / "chats" / "jddc.txt"
    if lang != "zh" and stale.is_file():
        stale.unlink()  # a zh shop's JDDC log must not sit beside an en shop's chats
    world = build_world(lang, seed, products)
    files = write_pack(world, out)
    summary = ShopSummary(out_dir=str(out), lang=lang, seed=seed, name=world.name, sessions=0, turns=0,
                          products=len(world.items), orders=len(world.orders), faq=len(world.lex["faq"]),
                          eval_items=0, wrong_replies=0, replies=0)
    files += _write_chats(world, out, sessions=sessions, wrong_rate=wrong_rate, summary=summary, progress=progress,
                          workers=workers)
    files.append(_write_eval(world, out, per_intent=eval_per_intent, summary=summary))
    summary.files = files
    return summary


# --- knowledge files ------------------------------------------------------------------------

def write_pack(world: World, out: Path) -> list[str]:
    """Write shop.yaml, catalog.csv, faq.jsonl, policies.md, orders.csv; return their relative paths."""
    lex, f = world.lex, world.facts
    meta = {"name": world.name, "language": world.lang, "currency": world.currency,
            "generator": "endcloud.corpus.shopworld", "seed": world.seed}
    write_text_atomic(out / "shop.yaml", yaml.safe_dump(meta, allow_unicode=True, sort_keys=False))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CATALOG_COLUMNS)
    for item in world.items:
        w.writerow(item.row("/"))
    write_text_atomic(out / "catalog.csv", buf.getvalue())
    faq = "".join(json.dumps({"question": q.format(**f), "answer": a.format(**f)}, ensure_ascii=False) + "\n" for q, a in lex["faq"])
    write_text_atomic(out / "faq.jsonl", faq)
    title = f"# {world.name} 店铺政策" if world.lang == "zh" else f"# {world.name} store policies"
    parts = [title, ""]
    for key in POLICY_KEYS:
        parts += [f"## {lex['policy_titles'][key]}", f"<!-- key: {key} -->", ""]
        for para in lex["policies"][key]:
            parts += [para.format(**f), ""]
    write_text_atomic(out / "policies.md", "\n".join(parts))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ORDER_COLUMNS)
    for row in world.orders:
        w.writerow([row[c] for c in ORDER_COLUMNS])
    write_text_atomic(out / "orders.csv", buf.getvalue())
    return list(PACK_FILES)


# --- chats ----------------------------------------------------------------------------------

@dataclass
class _Chunk:
    """One chunk of sessions, drawn and rendered: the text to append and its counts."""

    jsonl: str
    jddc: str
    turns: int
    replies: int
    wrong: int
    intents: Counter


class _ChunkDrawer:
    """Draws chunk k of the chats of a world. Each chunk has its own seed, so chunk k is the
    same bytes whatever came before it: chunks can be drawn in any order or process."""

    def __init__(self, lang: str, seed: int, products: int, wrong_rate: float):
        self.world = build_world(lang, seed, products)
        self.rng = random.Random()
        self.drawer = Drawer(self.world, self.rng, wrong_rate=wrong_rate)

    def __call__(self, job: tuple[int, int]) -> _Chunk:
        index, n = job
        world, rng, drawer = self.world, self.rng, self.drawer
        lang = world.lang
        zh = lang == "zh"
        rng.seed(f"shopworld:{lang}:{world.seed}:chats:{index}")
        getbits, randrange = rng.getrandbits, rng.randrange
        enc = _encode_str
        intents: Counter[str] = Counter()
        jl: list[str] = []
        dl: list[str] = []
        turns = replies = wrong = 0
        for _ in range(n):
            sid = f"{getbits(128):032x}"
            uid = f"USERID_{randrange(10_000_000, 100_000_000)}"
            parts = []
            for ex in drawer.session():
                # Rendered by hand (json.dumps' exact layout): ~2x faster than dumps on dicts.
                facts = ", ".join(map(enc, ex.facts))
                parts.append(f'{{"role": "user", "content": {enc(join_lines(ex.user, lang))}}}, '
                             f'{{"role": "assistant", "content": {enc(join_lines(ex.agent, lang))}, "intent": "{ex.intent}", '
                             f'"facts": [{facts}], "correct": {"true" if ex.correct else "false"}}}')
                intents[ex.intent] += 1
                wrong += not ex.correct
                if zh:
                    _jddc_lines(dl, sid, uid, ex)
            replies += len(parts)
            turns += 2 * len(parts)
            jl.append(f'{{"id": "{sid}", "messages": [{", ".join(parts)}]}}\n')
        return _Chunk("".join(jl), "".join(dl), turns, replies, wrong, intents)


_encode_str = json.encoder.encode_basestring  # the C string encoder json.dumps(ensure_ascii=False) uses
_WORKER: _ChunkDrawer | None = None


def _init_worker(args: tuple) -> None:
    global _WORKER
    _WORKER = _ChunkDrawer(*args)


def _work(job: tuple[int, int]) -> _Chunk:
    assert _WORKER is not None
    return _WORKER(job)


def _write_chats(world: World, out: Path, *, sessions: int, wrong_rate: float, summary: ShopSummary,
                 progress: Callable[[int], None] | None, workers: int = 1) -> list[str]:
    zh = world.lang == "zh"
    jobs = [(i, min(CHUNK, sessions - i * CHUNK)) for i in range((sessions + CHUNK - 1) // CHUNK)]
    args = (world.lang, world.seed, len(world.items), wrong_rate)
    intents: Counter[str] = Counter()
    turns = replies = wrong = done = 0
    (out / "chats").mkdir(exist_ok=True)
    files = ["chats/chats.jsonl"] + (["chats/jddc.txt"] if zh else [])
    pool = None
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        import sys

        # fork is cheap and safe here (the workers only draw text); spawn where fork is absent.
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(args,))
        # imap keeps chunk order, so the bytes are the same as with one process.
        chunks = pool.imap(_work, jobs)
    else:
        chunks = map(_ChunkDrawer(*args), jobs)
    try:
        with atomic_write(out / "chats" / "chats.jsonl") as fj, (
            atomic_write(out / "chats" / "jddc.txt") if zh else _Null()
        ) as fd:
            for (_, n), chunk in zip(jobs, chunks):
                fj.write(chunk.jsonl)
                if zh:
                    fd.write(chunk.jddc)
                intents.update(chunk.intents)
                turns, replies, wrong, done = turns + chunk.turns, replies + chunk.replies, wrong + chunk.wrong, done + n
                if progress is not None:
                    progress(done)
    finally:
        if pool is not None:
            pool.terminate()
    summary.sessions, summary.turns, summary.replies, summary.wrong_replies = sessions, turns, replies, wrong
    summary.intents = {k: intents[k] for k in INTENTS if intents[k]}
    return files


def _jddc_lines(dl: list[str], sid: str, uid: str, ex: Exchange) -> None:
    """JDDC: session_id, user_id, waiter_send (0 customer / 1 agent), is_transfer, is_repeat, sku, content."""
    sku = ex.sku or "nan"
    head = f"{sid}\t{uid}\t"
    for line in ex.user:
        dl.append(f"{head}0\t0\t0\t{sku}\t{line}\n")
    for line in ex.agent:
        dl.append(f"{head}1\t0\t0\t{sku}\t{line}\n")


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# --- held-out evaluation set ----------------------------------------------------------------

def _write_eval(world: World, out: Path, *, per_intent: int, summary: ShopSummary) -> str:
    """chats/eval.jsonl: per intent `per_intent` single questions in held-out phrasings, then the paper's probes."""
    rng = random.Random(f"shopworld:{world.lang}:{world.seed}:eval")
    drawer = Drawer(world, rng, wrong_rate=0.0, heldout=True)
    rows = []
    seen: set[str] = set()
    for intent in INTENTS:
        # Greetings have few phrasings: draw up to 3x, keep distinct queries only.
        n = 0
        for _ in range(per_intent * 3):
            if n == per_intent:
                break
            ex = drawer.exchange(intent)
            query = join_lines(ex.user, world.lang)
            if query in seen:
                continue
            seen.add(query)
            rows.append({"id": f"eval-{intent}-{n:03d}", "lang": world.lang, "intent": intent,
                         "query": query, "context": [], "facts": ex.facts})
            n += 1
    for i, (intent, query) in enumerate(PROBES[world.lang], 1):
        rows.append({"id": f"probe-{i}", "lang": world.lang, "intent": intent, "query": query, "context": [],
                     "facts": probe_facts(world, intent), "probe": True})
    with atomic_write(out / "chats" / "eval.jsonl") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary.eval_items = len(rows)
    return "chats/eval.jsonl"


def probe_facts(world: World, intent: str) -> list[str]:
    """What a correct reply to each paper probe states, for this shop."""
    f = world.facts
    probe_item = world.items[0]
    return {
        "greeting": [],
        "courier": [f["courier"]],
        "bare_number": [probe_item.size, probe_item.material],
        "coupon": [f["thr"], f["amt"]],
        "complaint": [f["days"]],
        "ship_today": [f["cutoff"]],
    }[intent]
