"""The cloud prompt of Table II: role text, then N question-answer examples, then the chat.

    msgs = build_prompt(conversation, examples, lang="zh", shots=500, budget_tokens=30_000)

Table II (the paper's §IV-A) asks the cloud model to play an e-commerce service agent and
shows it N = 500 real customer/agent exchanges. We keep that shape:

    system:  <Table II role text, zh or en>
             顾客：Q1 / 客服：A1  …  顾客：QN / 客服：AN        (most relevant last)
             [any system text the caller sent, e.g. shop notes]
    user / assistant / … / user:   the conversation itself (multi-turn context as turns)

The examples go in the system text, not as alternating user/assistant turns, because (1)
that is how Table II presents them — one prompt holding "Question No.1 … Answer No.N"; (2)
as turns, a chat model reads 500 unrelated exchanges as *this* customer's history, which
muddles real multi-turn context; (3) the conversation's roles stay exactly the customer's.

When fewer than N examples fit the context budget (or the bank is larger than N), they are
chosen by relevance to the customer's message (TF-IDF cosine over example queries: words for
Latin script, character 1-2-grams for Chinese) with diversity (maximal marginal relevance),
never at random; the choice is deterministic so the same request is the same prompt (the
distillation cache depends on it).

Every call to a real cloud gets this prompt, not only `distill` and `teacher ask`:
`default_teacher` (takeovers, shadow scoring, the online loop, onboarding) wraps the gated
client in a `PromptedTeacher` over `ShopExamples` — the shop's labels, chat-log pairs and FAQ,
re-read as they grow — the `LIVE_SHOTS` most relevant within `LIVE_BUDGET_TOKENS` (a customer
waits on these calls, and every token is redacted, sent and paid for each time). Whatever system text the caller sent (the
shop knowledge a turn retrieved, the "Customer:" block of the customer's orders) follows the
examples in the one system message, each block starting on its own line.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from endcloud.cloud.teacher import Messages, Teacher, WrapperTeacher, check_messages
from endcloud.paper import PAPER
from endcloud.errors import ConfigError, DataError
from endcloud.records import Reply
from endcloud.text import CJK_IDEOGRAPHS, detect_lang, estimate_message_tokens, estimate_tokens

ROLE_TEXT = {
    # Table II as the paper states it (its zh original, and the paper's English rendering).
    "zh": (
        "假设你是一名电商客服，能够解答电商方面的专业知识，具有良好的服务意识，能够妥善处理顾客的请求。"
        "请你扮演电商客服的角色，接待下面的顾客。以下是一些示例供你参考。"
    ),
    "en": (
        "Assume that you are an e-commerce customer service agent who is able to answer specialized "
        "e-commerce questions, has good service consciousness, and is able to deal with the customer's "
        "request properly. Please play the role of an e-commerce customer service agent and serve the "
        "customer below. Here are some examples for your reference."
    ),
}
SPEAKERS = {"zh": ("顾客", "客服"), "en": ("Customer", "Customer service")}
DEFAULT_BUDGET_TOKENS = 30_000  # room for N=500 short shop exchanges; the reply has its own max_tokens
# Live calls (takeovers, shadow scoring, the online loop) wait on the answer while a customer
# waits, and every token of the prompt is redacted, sent and paid per call: the most relevant
# examples within a smaller budget (~100 short exchanges) instead of the offline 30k.
LIVE_BUDGET_TOKENS = 8_000
LIVE_SHOTS = 100  # choosing 100 of 20,000 examples takes ~35 ms on one core; 500 take ~110 ms
MMR_LAMBDA = 0.7  # relevance vs. diversity (1.0 = relevance only)
NEAR_DUPLICATE = 0.95  # cosine of example queries above which one is a copy of the other
_IDEOGRAPH_RUN = re.compile(f"[{CJK_IDEOGRAPHS}]+")
_WORD = re.compile(r"[a-z0-9]+")


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def analyze(text: str) -> list[str]:
    """Terms for retrieval: Latin words + Chinese character unigrams and bigrams."""
    t = _norm(text)
    terms = _WORD.findall(t)
    for run in _IDEOGRAPH_RUN.findall(t):
        terms.extend(run)
        terms.extend(run[i : i + 2] for i in range(len(run) - 1))
    return terms


class _Tfidf:
    """TF-IDF (sublinear tf, smooth idf, L2-normalised rows) over pre-analysed documents.

    Thirty lines of numpy instead of scikit-learn's TfidfVectorizer, which computes the
    same weights but costs several seconds of import on every `endcloud` start."""

    def __init__(self, docs: list[list[str]]):
        self.vocab: dict[str, int] = {}
        counts: list[dict[int, int]] = []
        for doc in docs:
            c: dict[int, int] = {}
            for t in doc:
                j = self.vocab.setdefault(t, len(self.vocab))
                c[j] = c.get(j, 0) + 1
            counts.append(c)
        df = np.zeros(len(self.vocab))
        for c in counts:
            df[list(c)] += 1
        self.idf = np.log((1 + len(docs)) / (1 + df)) + 1.0
        self.rows: list[tuple[np.ndarray, np.ndarray]] = []
        postings: dict[int, tuple[list[int], list[float]]] = {}
        for i, c in enumerate(counts):
            idx = np.fromiter(c.keys(), dtype=np.int64, count=len(c))
            w = (1.0 + np.log(np.fromiter(c.values(), dtype=np.float64, count=len(c)))) * self.idf[idx]
            norm = float(np.linalg.norm(w)) or 1.0
            w = w / norm
            self.rows.append((idx, w))
            for j, x in zip(idx.tolist(), w.tolist()):
                ids, ws = postings.setdefault(j, ([], []))
                ids.append(i)
                ws.append(x)
        # As arrays, a query costs one bincount over its terms' postings: a live call scores a
        # bank of 20,000 examples in about a millisecond instead of a Python loop's ~70 ms.
        self.postings: dict[int, tuple[np.ndarray, np.ndarray]] = {
            j: (np.asarray(ids, dtype=np.intp), np.asarray(ws, dtype=np.float64)) for j, (ids, ws) in postings.items()}

    def relevance(self, terms: list[str]) -> np.ndarray:
        """Cosine of the query's TF-IDF vector with every document."""
        c: dict[int, int] = {}
        for t in terms:
            j = self.vocab.get(t)
            if j is not None:
                c[j] = c.get(j, 0) + 1
        out = np.zeros(len(self.rows))
        if not c:
            return out
        q = {j: (1.0 + np.log(n)) * self.idf[j] for j, n in c.items()}
        # Like a fitted vectorizer, terms the bank never saw are dropped before normalising.
        norm = float(np.sqrt(sum(v * v for v in q.values()))) or 1.0
        hits = [(self.postings[j], v / norm) for j, v in q.items() if j in self.postings]
        if not hits:
            return out
        ids = np.concatenate([p[0] for p, _ in hits])
        vals = np.concatenate([p[1] * v for p, v in hits])
        return np.bincount(ids, weights=vals, minlength=len(self.rows)).astype(np.float64)

    def dense(self, docs: np.ndarray) -> np.ndarray:
        """Rows `docs` as a dense matrix over just the terms they use (for pairwise cosine)."""
        cols: dict[int, int] = {}
        for i in docs:
            for j in self.rows[int(i)][0].tolist():
                cols.setdefault(j, len(cols))
        m = np.zeros((len(docs), max(1, len(cols))), dtype=np.float32)
        for r, i in enumerate(docs):
            idx, w = self.rows[int(i)]
            m[r, [cols[j] for j in idx.tolist()]] = w
        return m


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    query: str
    answer: str


def _as_example(i: int, x: Any) -> Example:
    if isinstance(x, Example):
        return x
    if isinstance(x, (tuple, list)) and len(x) == 2:
        return Example(str(i), str(x[0]), str(x[1]))
    if isinstance(x, dict):
        q = x.get("query", x.get("question"))
        a = x.get("response", x.get("answer", x.get("label")))
        if isinstance(q, str) and isinstance(a, str):
            return Example(str(x.get("id", i)), q, a)
    q, a = getattr(x, "query", None), getattr(x, "response", None)
    if isinstance(q, str) and isinstance(a, str):
        return Example(str(getattr(x, "id", i)), q, a)
    raise DataError(f"example {i} needs a query and an answer (Pair, dict or (q, a)), got {x!r:.80}")


class ExampleBank:
    """The question-answer examples for the prompt, indexed once for relevance search."""

    def __init__(self, examples: Iterable[Any]):
        self.examples = [_as_example(i, x) for i, x in enumerate(examples)]
        self.examples = [e for e in self.examples if e.query.strip() and e.answer.strip()]
        self._tokens = np.array([estimate_tokens(e.query) + estimate_tokens(e.answer) + 6 for e in self.examples])
        self._index = _Tfidf([analyze(e.query) for e in self.examples])
        # Looked up per request (the customer's own question and excluded ids are never shown):
        # indexed once here rather than normalising every example on every call.
        self._by_query: dict[str, list[int]] = {}
        self._by_id: dict[str, list[int]] = {}
        for i, e in enumerate(self.examples):
            self._by_query.setdefault(_norm(e.query).strip(), []).append(i)
            self._by_id.setdefault(e.id, []).append(i)

    def __len__(self) -> int:
        return len(self.examples)

    def select(self, query: str, *, k: int, budget_tokens: int, exclude_ids: Sequence[str] = ()) -> list[Example]:
        """Up to `k` examples within `budget_tokens`, least relevant first (most relevant
        nearest the conversation). Relevance with diversity (MMR) when not all fit."""
        if not self.examples or k <= 0 or budget_tokens <= 0:
            return []
        allowed = np.ones(len(self.examples), dtype=bool)
        allowed[self._by_query.get(_norm(query).strip(), [])] = False
        for x in set(map(str, exclude_ids)):
            allowed[self._by_id.get(x, [])] = False
        rel = self._index.relevance(analyze(query))
        idx = np.flatnonzero(allowed)
        # Stable order: relevance desc, then original position (deterministic ties).
        idx = idx[np.lexsort((idx, -rel[idx]))]
        if len(idx) <= k and self._tokens[idx].sum() <= budget_tokens:
            chosen = list(idx)
        else:
            chosen = self._mmr(idx[: max(2 * k, 200)], rel, k, budget_tokens)
            # MMR picks the most useful first: put it last, nearest the conversation.
            return [self.examples[i] for i in reversed(chosen)]
        chosen.sort(key=lambda i: (rel[i], -i))
        return [self.examples[i] for i in chosen]

    def _mmr(self, cand: np.ndarray, rel: np.ndarray, k: int, budget: int) -> list[int]:
        vecs = self._index.dense(cand)
        sims = vecs @ vecs.T
        chosen: list[int] = []  # positions in cand
        max_sim = np.zeros(len(cand))
        left = np.ones(len(cand), dtype=bool)
        spent = 0
        while len(chosen) < k and left.any():
            score = MMR_LAMBDA * rel[cand] - (1 - MMR_LAMBDA) * max_sim
            # Near-copies of a chosen example ("在吗" x 100 in real logs) go to the back.
            score[max_sim >= NEAR_DUPLICATE] -= 1.0
            score[~left] = -np.inf
            j = int(np.argmax(score))
            left[j] = False
            cost = int(self._tokens[cand[j]])
            if spent + cost > budget:
                continue  # a shorter example may still fit
            spent += cost
            chosen.append(j)
            max_sim = np.maximum(max_sim, sims[j])
        return [int(cand[j]) for j in chosen]


# Corpus pairs arrive redacted ("[PHONE_1]" is some other customer's phone). In the prompt
# those numbered placeholders would collide with the ones the privacy gate issues for *this*
# customer (its vault counts from 1 per request), so examples show them unnumbered.
_NUMBERED_PLACEHOLDER = re.compile(r"\[([A-Z]+)_[0-9]+\]")


def format_examples(examples: Sequence[Example], lang: str) -> str:
    cust, agent = SPEAKERS[lang]

    def flat(text: str) -> str:  # one line per turn keeps the format unambiguous
        return _NUMBERED_PLACEHOLDER.sub(r"[\1]", " ".join(text.split()))

    return "\n\n".join(f"{cust}：{flat(e.query)}\n{agent}：{flat(e.answer)}" if lang == "zh"
                       else f"{cust}: {flat(e.query)}\n{agent}: {flat(e.answer)}" for e in examples)


def _trim_conversation(conv: list[dict[str, str]], budget: int) -> list[dict[str, str]]:
    """Drop the oldest turns until the conversation fits; the last message always stays."""
    while len(conv) > 1 and estimate_message_tokens(conv) > budget:
        conv = conv[1:]
    return conv


def build_prompt(
    messages: Messages,
    examples: ExampleBank | Iterable[Any],
    *,
    lang: str,
    shots: int = PAPER.shots,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    exclude_ids: Sequence[str] = (),
) -> list[dict[str, str]]:
    """Table II prompt: [system: role text + examples (+ caller's system text)] + conversation."""
    if lang not in ROLE_TEXT:
        raise ConfigError(f"prompt language must be one of {sorted(ROLE_TEXT)}, got {lang!r}")
    if shots < 0:
        raise ConfigError(f"--shots must be >= 0, got {shots!r}")
    msgs = check_messages(messages)
    extra_system = "\n".join(m["content"] for m in msgs if m["role"] == "system")
    conv = [m for m in msgs if m["role"] != "system"]
    if not conv or conv[-1]["role"] != "user":
        raise DataError("the conversation must end with the customer's (user) message")
    conv = _trim_conversation(conv, budget_tokens // 2)
    bank = examples if isinstance(examples, ExampleBank) else ExampleBank(examples)
    head = ROLE_TEXT[lang] + ("\n\n" + extra_system if extra_system else "")
    left = budget_tokens - estimate_tokens(head) - estimate_message_tokens(conv)
    users = [m["content"] for m in conv if m["role"] == "user"]
    query = " ".join(users[-2:])  # the last question, helped by the one before for short follow-ups
    chosen = bank.select(query, k=shots, budget_tokens=left, exclude_ids=exclude_ids)
    system = ROLE_TEXT[lang]
    if chosen:
        system += "\n\n" + format_examples(chosen, lang)
    if extra_system:
        system += "\n\n" + extra_system
    return [{"role": "system", "content": system}, *conv]


class PromptedTeacher(WrapperTeacher):
    """Wraps a teacher so each conversation is sent inside the Table II prompt.

    `examples`: a fixed bank (an ExampleBank, pairs, dicts, (q, a) tuples) or a live source
    (`ShopExamples`) whose bank follows the shop's files as they grow."""

    def __init__(
        self,
        inner: Teacher,
        *,
        examples: "ExampleBank | ShopExamples | Iterable[Any]",
        lang: str | None = None,
        shots: int = PAPER.shots,
        budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    ):
        super().__init__(inner)
        self._source = examples if isinstance(examples, ShopExamples) else None
        self._bank = None if self._source is not None else (
            examples if isinstance(examples, ExampleBank) else ExampleBank(examples))
        self.lang = lang
        self.shots = shots
        self.budget_tokens = budget_tokens

    @property
    def bank(self) -> ExampleBank:
        """The examples this request chooses from (a live source's current bank)."""
        return self._source.current() if self._source is not None else self._bank  # type: ignore[return-value]

    def prompt(self, messages: Messages, *, exclude_ids: Sequence[str] = (), lang: str | None = None) -> list[dict[str, str]]:
        """The Table II messages for this conversation; language: `lang`, else the teacher's,
        else detected from the customer's words."""
        msgs = check_messages(messages)
        lang = lang or self.lang or detect_lang(" ".join(m["content"] for m in msgs if m["role"] == "user"))
        return build_prompt(msgs, self.bank, lang=lang, shots=self.shots, budget_tokens=self.budget_tokens,
                            exclude_ids=exclude_ids)

    async def areply(self, messages: Messages, *, exclude_ids: Sequence[str] = (), lang: str | None = None) -> Reply:
        # Choosing examples is CPU work (tens of ms for a large bank): off the event loop, which
        # serves other customers meanwhile.
        prompt = await asyncio.to_thread(self.prompt, messages, exclude_ids=exclude_ids, lang=lang)
        return await self.inner.areply(prompt)

    def outbound_body(self, messages: Messages) -> str:
        return self.inner.outbound_body(self.prompt(messages))


class ShopExamples:
    """The shop's own answered questions as Table II examples, for every live cloud call.

        teacher = PromptedTeacher(gated, examples=ShopExamples(workspace="endcloud-work"))

    Sources, in this order: the teacher's labels (`labels/labels.jsonl`), the chat-log pairs
    (`corpus/pairs.jsonl`), the shop pack's FAQ; at most `limit` rows from each file. Read on
    the first call (a server starts without touching them), then again when a file changes
    (checked at most every `recheck_s` seconds): a rebuild runs in a thread while the old
    bank keeps answering, so a growing labels file never stalls a takeover.
    """

    def __init__(self, *, workspace: Any = None, shop: Any = None, labels: bool = True, pairs: bool = True,
                 faq: bool = True, limit: int = 20_000, recheck_s: float = 10.0):
        from endcloud.cloud.teacher import resolve_workspace

        ws = resolve_workspace(workspace)
        self.files = [p for p, on in ((ws.labels, labels), (ws.pairs, pairs)) if on]
        self.shop = shop if shop is not None else (ws.shop if ws.has_shop() else None)
        self.faq = faq
        self.limit, self.recheck_s = limit, recheck_s
        self._bank: ExampleBank | None = None
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._rebuilding = False

    def _signature(self) -> tuple:
        def stat(p: Any) -> tuple:
            try:
                st = os.stat(p)
                return (str(p), st.st_mtime_ns, st.st_size)
            except (OSError, TypeError):
                return (str(p), None, None)

        shop_files = ([Path(self.shop) / "faq.jsonl"] if self.faq and isinstance(self.shop, (str, Path)) else [])
        return tuple(stat(p) for p in [*self.files, *shop_files])

    def rows(self) -> list[dict[str, Any]]:
        """Every example as {"id", "query", "response"} (what the bank indexes)."""
        from endcloud.fileio import read_jsonl

        out: list[dict[str, Any]] = []
        for path in self.files:
            if not Path(path).exists():
                continue
            for n, d in enumerate(read_jsonl(path)):
                if n >= self.limit:
                    break
                q, a = d.get("query"), d.get("label", d.get("response"))
                if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
                    out.append({"id": str(d.get("id", f"{Path(path).stem}:{n}")), "query": q, "response": a})
        if self.faq and self.shop is not None:
            from endcloud.cloud.teacher import resolve_shop

            try:
                pack = resolve_shop(self.shop, None)
            except Exception:  # a broken pack must not stop a takeover; its FAQ is simply not shown
                pack = None
            for i, (q, a) in enumerate(getattr(pack, "faq", None) or []):
                out.append({"id": f"faq:{i}", "query": q, "response": a})
        return out

    def current(self) -> ExampleBank:
        """The bank for this call (built on first use; refreshed when a source file changed)."""
        now = time.monotonic()
        with self._lock:
            if self._bank is None:
                self._stamp = self._signature()
                self._bank = ExampleBank(self.rows())
                self._checked = now
                return self._bank
            if now - self._checked < self.recheck_s or self._rebuilding:
                return self._bank
            self._checked = now
            stamp = self._signature()
            if stamp == self._stamp:
                return self._bank
            self._rebuilding = True
        threading.Thread(target=self._rebuild, args=(stamp,), daemon=True, name="shop-examples").start()
        return self._bank

    def _rebuild(self, stamp: tuple) -> None:
        try:
            bank = ExampleBank(self.rows())
            with self._lock:
                self._bank, self._stamp = bank, stamp
        finally:
            self._rebuilding = False

    def __len__(self) -> int:
        return len(self.current())


def live_prompt(kw: dict[str, Any], *, shop: Any = None, workspace: Any = None) -> dict[str, Any]:
    """The keywords `default_teacher` gives a real cloud so that every live call (takeover,
    shadow score, evolve label, onboarding) is sent in the Table II prompt: the shop's own
    examples (`ShopExamples`) unless `examples=` is given (`examples=False`: bare messages),
    within `LIVE_BUDGET_TOKENS` and `LIVE_SHOTS` unless `budget_tokens=` / `shots=` are given."""
    kw = dict(kw)
    if kw.get("examples") is False:
        kw.pop("examples")
        return kw
    if kw.get("examples") is None:
        kw["examples"] = ShopExamples(shop=shop, workspace=workspace)
        kw.setdefault("budget_tokens", LIVE_BUDGET_TOKENS)
        kw.setdefault("shots", LIVE_SHOTS)
    return kw
