"""Benchmark a shop reader's own drafts on the hand-written held-out shops, without a server.

`bench_quality.py` measures what customers get from a running `endcloud serve` (router, cloud,
grounding check and all); it takes minutes per pack. This measures the one thing a new
reader changes — does the base, given each question with the knowledge serving would put
in its prompt, state the right fact? — in seconds, so two readers (the shipped one and one
just built with `endcloud pretrain --recipe reader`) compare on the same questions:

    .venv/bin/python bench/bench_reader.py                          # the shipped reader
    .venv/bin/python bench/bench_reader.py --reader NEW/ --reader endcloud/assets/reader
    .venv/bin/python bench/bench_reader.py --packs tea-shop-zh --show   # every draft, judged
    .venv/bin/python bench/bench_reader.py --packs tea-shop-zh --adapter WS/adapters/shop/v1  # after onboarding

Per pack (`bench/heldout/<pack>/`, never used to build or tune anything; see its README):
each conversation is played as serving plays it — the earlier turns answered by the offline
teacher and kept as history, the last turn given the snippets `endcloud.kb.prompt.retrieve`
finds, placed by `build_messages` — and judged by `bench/heldout/check.py`. Also printed,
per pack, so a reader's figure can be read against what it was given: the share of
answerable questions whose expected fact is in the retrieved snippets at all (the ceiling
for a reader that only copies), the offline teacher's own score on the same turns, and how
many of the wrong and of the right drafts (hand-offs left out) serving's novelty check
(`endcloud.scoring.novelty`, with the reader's glue.json) would send to the cloud.
Greedy decoding, fp32: the figures are the same on every run and every machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import check  # noqa: E402  (the held-out judge, loaded once)


def play(pack_dir: Path, *, k: int = 3):
    """(question, messages for the reader, snippet text, teacher's reply) per conversation."""
    from endcloud.cloud.reference import ReferenceTeacher
    from endcloud.kb import KnowledgeBase, ShopPack
    from endcloud.kb.prompt import build_messages, retrieve

    pack = ShopPack.load(pack_dir)
    kb = KnowledgeBase(pack)
    teacher = ReferenceTeacher(pack=pack, kb=kb)
    rows = []
    for q in check.load_questions(pack_dir / "questions.jsonl"):
        turns: list[dict[str, str]] = []
        for i, text in enumerate(q.turns):
            turns.append({"role": "user", "content": text})
            if i < len(q.turns) - 1:
                turns.append({"role": "assistant", "content": teacher.answer(list(turns)).text})
        snippets = retrieve(kb, turns, k)
        rows.append((q, build_messages(turns, snippets, late=True), "\n".join(s.text for s in snippets),
                     teacher.answer(list(turns)).text))
    return pack, rows


def in_snippets(q, text: str) -> bool | None:
    """Whether every expected fact group has an alternative in `text` (None: nothing to find)."""
    groups = check.expected_facts(q)
    if q.unanswerable or not groups:
        return None
    return all(any(check.contains(text, alt) for alt in g) for g in groups)


def run(reader: Path, packs: list[Path], *, show: bool, log, adapter: Path | None = None) -> dict:
    from endcloud.end.base import load_tokenizer
    from endcloud.shopreader import generate_replies
    from transformers import AutoModelForCausalLM

    from endcloud.cloud.reference import REPLIES
    from endcloud.end.reader import GLUE_NAME
    from endcloud.scoring.grounding import conversation_evidence
    from endcloud.scoring.novelty import Glue, NoveltyChecker
    from endcloud.serve.router import is_handoff

    # what serving's novelty check would send to the cloud (the reader's glue.json, when it has one)
    glue = Glue.load(reader / GLUE_NAME) if (reader / GLUE_NAME).exists() else None
    novelty = NoveltyChecker(glue) if glue is not None else None
    handoffs = tuple(REPLIES["unknown"].values())  # as serving's TurnService knows them
    tok = load_tokenizer(str(reader), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(reader)).float().eval()
    if adapter is not None:  # e.g. what `endcloud shop onboard` trained for one of the packs
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    out = {}
    for pack_dir in packs:
        t0 = time.time()
        pack, rows = play(pack_dir)
        facts = check.PackFacts.from_pack(pack)
        drafts = generate_replies(model, tok, [m for _, m, _, _ in rows], max_new_tokens=80)
        n = right = teacher_right = found = answerable = unanswerable_kept = unanswerable = 0
        flagged = {True: [0, 0], False: [0, 0]}  # right / wrong drafts (not hand-offs): [novel, all]
        for (q, msgs, snips, t_reply), d in zip(rows, drafts):
            v, tv = check.judge(d, q, facts), check.judge(t_reply, q, facts)
            if glue is not None and not is_handoff(d, handoffs):
                # serving's evidence: the messages the reader got (their snippets) and the shop's profile
                nov = novelty.check(d, conversation_evidence(msgs, pack, snippets=0))
                flagged[bool(v.right)][0] += not nov.clean
                flagged[bool(v.right)][1] += 1
            n += 1
            right += v.right
            teacher_right += tv.right
            if q.unanswerable:
                unanswerable += 1
                unanswerable_kept += v.right
            f = in_snippets(q, snips)
            if f is not None:
                answerable += 1
                found += f
            if show:
                log(f"[{q.id}] {' | '.join(q.turns)}\n  draft {'OK' if v.right else 'X ' + v.reason}: {d[:160]}")
        out[pack_dir.name] = {"questions": n, "drafts_right": round(right / n, 4),
                              "unanswerable_abstained": f"{unanswerable_kept}/{unanswerable}",
                              "fact_in_snippets": round(found / max(1, answerable), 4),
                              "teacher_right": round(teacher_right / n, 4), "seconds": round(time.time() - t0, 1),
                              "novel_wrong": "{}/{}".format(*flagged[False]), "novel_right": "{}/{}".format(*flagged[True])}
    total = sum(v["questions"] for v in out.values())
    out["all"] = {"questions": total,
                  "drafts_right": round(sum(v["drafts_right"] * v["questions"] for v in out.values()) / max(1, total), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    from endcloud.end.reader import reader_base

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reader", action="append", type=Path, help="a reader (model dir); repeat to compare "
                    "(default: the shipped one)")
    ap.add_argument("--adapter", type=Path, help="a LoRA adapter dir on the (one) reader, e.g. a workspace's "
                    "adapters/shop/v1 after `endcloud shop onboard` (then name its pack with --packs)")
    ap.add_argument("--packs", nargs="*", help="held-out pack names (default: all under --root)")
    ap.add_argument("--root", type=Path, default=None, help="the folder of packs (default: bench/heldout; "
                    "bench/devpacks holds the packs rules were developed on)")
    ap.add_argument("--show", action="store_true", help="print every draft with its verdict")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    readers = args.reader or [reader_base()]
    packs = [p for p in (check.packs(args.root) if args.root else check.packs()) if not args.packs or p.name in args.packs]
    if not packs:
        print("no held-out packs found", file=sys.stderr)
        return 2
    report = {}
    for r in readers:
        report[str(r)] = run(r, packs, show=args.show, log=print, adapter=args.adapter)
        print(f"\n{r}" + (f" + {args.adapter}" if args.adapter else ""))
        print("| pack | questions | reader drafts right | unanswerable abstained | fact in snippets | offline teacher "
              "| novel text: wrong drafts | novel text: right drafts |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, v in report[str(r)].items():
            if name != "all":
                print(f"| {name} | {v['questions']} | {v['drafts_right']:.1%} | {v['unanswerable_abstained']} | "
                      f"{v['fact_in_snippets']:.1%} | {v['teacher_right']:.1%} | {v['novel_wrong']} | {v['novel_right']} |")
        a = report[str(r)]["all"]
        print(f"| all | {a['questions']} | {a['drafts_right']:.1%} | | | |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
