"""Redaction bench: precision / recall / F2 per PII type on generated cases, and lines per second.

    .venv/bin/python bench/bench_redact.py              # 4,000 cases + 600 mixed lines, writes docs/bench/privacy.md
    .venv/bin/python bench/bench_redact.py --n 2000 --no-write

Cases come from `endcloud.privacy.synth` (zh + en, every type in several templates and formats,
plus look-alike-only negatives: prices, dates, sizes, SKUs, model numbers, coupons, hotlines,
already-masked corpus tokens). Scoring, per type:
  recall     a gold span counts as found when predicted spans of the SAME type cover all of it;
  precision  a predicted span counts as right when it overlaps a gold span of the same type;
  F2         (5·P·R) / (4·P + R): recall weighs more, since a miss leaks and a false hit only costs context.
"Any-type recall" ignores the type: the share of gold PII characters that were redacted at all.
Speed is single-threaded `redact` over clean lines and PII lines separately (and over the real
JDDC sample when ../shared/data is present), next to `str.split` on the same lines as a yardstick
for how loaded the machine was.

Hand-written cases (`bench/data/redact_cases_v2.jsonl`, written apart from the rules): names,
whole addresses, handles, foreign phones and postcodes in zh and en, and look-alikes that must
survive (product and brand names, policy text, SKUs, prices). Per category: typed recall (the
gold span covered by spans of its type; a postcode may also be covered by an ADDRESS), any-type
recall, and the share of look-alike lines left untouched; per predicted type, precision (the
span overlaps some gold span).

    .venv/bin/python bench/bench_redact.py --v2-only      # just the hand-written cases

Two more hand-written sets, each written before the rules it measures and scored before and after
them (both figures in the report): `redact_cases_v3_phones.jsonl` (foreign phones without a phone
word, digit look-alikes) and `redact_cases_v3_ecommerce.jsonl` (issue #22: order, tracking and
invoice numbers, typed ORDER for invoices; names at field boundaries; product ids that survive).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from endcloud.fileio import write_text_atomic  # noqa: E402
from endcloud.privacy import PII_TYPES, detect, redact  # noqa: E402
from endcloud.privacy import synth  # noqa: E402
from endcloud.privacy.synth import STRUCTURED, clean_line, make_cases, make_mixed_case, make_noisy_case  # noqa: E402


def score(cases):
    tp_r, n_gold, tp_p, n_pred = Counter(), Counter(), Counter(), Counter()
    any_hit = any_total = 0
    neg_cases = neg_flagged = 0
    misses = []
    for c in cases:
        spans = detect(c.text)
        if not c.gold:
            neg_cases += 1
            neg_flagged += bool(spans)
        for s, e, t, v in c.gold:
            n_gold[t] += 1
            covered = {i for sp in spans if sp.type == t for i in range(sp.start, sp.end)}
            if all(i in covered for i in range(s, e)):
                tp_r[t] += 1
            elif len(misses) < 10:
                misses.append((t, v, c.text))
            redacted = {i for sp in spans for i in range(sp.start, sp.end)}
            any_total += e - s
            any_hit += sum(i in redacted for i in range(s, e))
        for sp in spans:
            n_pred[sp.type] += 1
            if any(sp.type == t and sp.start < e and s < sp.end for s, e, t, _ in c.gold):
                tp_p[sp.type] += 1
    rows = []
    for t in (*PII_TYPES, "ALL"):
        g = sum(n_gold.values()) if t == "ALL" else n_gold[t]
        p = sum(n_pred.values()) if t == "ALL" else n_pred[t]
        r_hit = sum(tp_r.values()) if t == "ALL" else tp_r[t]
        p_hit = sum(tp_p.values()) if t == "ALL" else tp_p[t]
        prec = p_hit / p if p else 1.0
        rec = r_hit / g if g else 1.0
        f2 = 5 * prec * rec / (4 * prec + rec) if prec + rec else 0.0
        rows.append((t, g, p, prec, rec, f2))
    return rows, any_hit / max(any_total, 1), neg_cases, neg_flagged, misses


# Out of scope by design (names need a cue word, addresses a number or admin level) or not handled:
# measured so the limits are on record, not counted in the table above.
HARD = {
    "NAME without a cue word (zh)": lambda r: ("麻烦转告{}一声", synth.zh_name(r)),
    "NAME without a cue word (en)": lambda r: ("Thanks {}, see you tomorrow", synth.en_name(r)),
    "ADDRESS: road only, no number or admin level": lambda r: ("送到{}就行", r.choice(["建国路", "中山路", "长安街"])),
    "ADDRESS: lower-case en street": lambda r: ("send it to {} please", f"{r.randint(1, 999)} {r.choice(['main', 'oak', 'elm'])} st"),
    "EMAIL written out (at / dot, 艾特 / 点, #)": lambda r: ("email: {}", r.choice(["zhangwei at qq dot com", "lina艾特163点com", "amy.w#gmail.com", "tom [at] outlook [dot] com"])),
    "ID: old 15-digit format": lambda r: ("身份证{}", f"110101{r.randint(50, 99)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}{r.randint(100, 999)}"),
    "PHONE spelled in English words": lambda r: ("call {}", " ".join(["one", "three", "eight"] + [r.choice(["zero", "one", "two", "five"]) for _ in range(8)])),
}


V2_CASES = ROOT / "bench" / "data" / "redact_cases_v2.jsonl"
# written after the rules were done, measured once before two general fixes (given-name characters,
# where a name ends); see docs/bench/privacy.md for both figures
V2_HOLDOUT = ROOT / "bench" / "data" / "redact_cases_v2_holdout.jsonl"
# written after the foreign-phone fix was designed but before it was coded, and measured before and after
# it (issue #16): phones in 20+ national plans with and without a phone word, and digit look-alikes
V3_PHONES = ROOT / "bench" / "data" / "redact_cases_v3_phones.jsonl"
# written before the rules for them (issue #22): order, tracking and invoice numbers (invoices typed ORDER),
# names at field boundaries (CSV, JSON, tabs, pipes) and untitled names in context; product ids and policy text
V3_ECOMMERCE = ROOT / "bench" / "data" / "redact_cases_v3_ecommerce.jsonl"
# written after the v3 rules were done, by the same hand, and run once with no change after: a check
# that they generalise, weaker than an outside corpus would be
V3_HOLDOUT = ROOT / "bench" / "data" / "redact_cases_v3_holdout.jsonl"
V2_ACCEPT = {"NAME": {"NAME"}, "ADDRESS": {"ADDRESS"}, "HANDLE": {"HANDLE"}, "PHONE": {"PHONE"}, "POSTCODE": {"POSTCODE", "ADDRESS"},
             "ORDER": {"ORDER"}, "TRACKING": {"TRACKING"}}
V2_TARGET = 0.98


def score_v2(path=V2_CASES):
    """(rows per category, precision rows per predicted type, look-alike kept, misses, false hits)."""
    import json

    cases = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    gold_n, typed, anyhit = Counter(), Counter(), Counter()
    pred_n, pred_ok = Counter(), Counter()
    look_n = look_kept = 0
    misses, false_hits = [], []
    for c in cases:
        spans = detect(c["text"])
        if c["category"] == "LOOKALIKE":
            look_n += 1
            look_kept += not spans
            if spans:
                false_hits.append((c["text"], [(sp.type, sp.value) for sp in spans]))
        for g in c["gold"]:
            key = (g["type"], c["lang"])
            gold_n[key] += 1
            s, e = g["start"], g["end"]
            ok_types = V2_ACCEPT[g["type"]]
            cov = {i for sp in spans if sp.type in ok_types for i in range(sp.start, sp.end)}
            cov_any = {i for sp in spans for i in range(sp.start, sp.end)}
            t_ok = all(i in cov for i in range(s, e))
            typed[key] += t_ok
            anyhit[key] += all(i in cov_any for i in range(s, e))
            if not t_ok:
                misses.append((g["type"], c["lang"], g["value"], c["text"], [(sp.type, sp.value) for sp in spans]))
        for sp in spans:
            pred_n[sp.type] += 1
            pred_ok[sp.type] += any(sp.start < g["end"] and g["start"] < sp.end for g in c["gold"])
    rows = []
    for cat in V2_ACCEPT:
        for lang in ("zh", "en", None):
            keys = [(cat, lang)] if lang else [(cat, "zh"), (cat, "en")]
            n = sum(gold_n[k] for k in keys)
            if n:
                rows.append((cat, lang or "all", n, sum(typed[k] for k in keys) / n, sum(anyhit[k] for k in keys) / n))
    prec = [(t, pred_n[t], pred_ok[t] / pred_n[t]) for t in sorted(pred_n)]
    return rows, prec, (look_kept, look_n), misses, false_hits


# What these cases measured the first time they were run, for the record: the main set before the
# general fixes it prompted, the holdout set before its two.
V2_FIRST = {
    V2_CASES: "First run, on the rules as written before the cases: typed recall NAME 0.814, ADDRESS 0.778, HANDLE 0.900, "
              "PHONE 0.920, POSTCODE 0.778, look-alikes kept 0.979. The misses were then fixed by general rules "
              "(more street and postcode forms, field labels filled as 写的是/改成, a German mobile shaped like a "
              "Chinese one, a brand list that did not strip newlines), not case by case; the figures below are after.",
    V2_HOLDOUT: "Written after the rules were done and run once: NAME 0.800 (zh 0.667, en 0.933), every other category "
                "1.000, look-alikes 1.000. Two general fixes followed (given-name characters missing from the list, "
                "and where a name after 联系/通知 ends); the figures below are after them, so this set is no longer unseen.",
    V3_PHONES: "Written before the region rule was coded, and run on the rules as they were: PHONE typed recall 0.717 "
               "(zh 0.583, en 0.765; the 13 misses were numbers in plans without a trunk 0, SG/HK/MO/DK/MX, with a country "
               "named and no phone word), look-alikes kept 0.952 (a JAN barcode taken as a CARD, a part number shaped like an "
               "Australian mobile). Then: a number VALID (`phonenumbers`) in the plan of a country or city named within 40 "
               "characters, written in groups, not after a price sign or a product word; product words silence the national "
               "rule too. The figures below are after.",
    V3_ECOMMERCE: "Written before the rules for them (issue #22), run on the rules as they were: NAME 0.731 (zh 0.615, en 0.846), "
                  "ORDER (order and invoice numbers) 0.500, TRACKING 0.833, look-alikes kept 0.700 (six product-page ids and "
                  "product ids taken as orders). Then general rules: invoice cues (发票号码, invoice no.), the Amazon 3-7-7 and "
                  "Pinduoduo 6-15 order shapes without a cue, tracking numbers printed in groups and JD's letter prefixes, a "
                  "value must end its token (EA123456789CN is a courier number), product words (商品ID, 宝贝, item id, JAN, "
                  "part) and product-page links keep their numbers, field labels in quotes (JSON), CSV cells, all-caps names, "
                  "为谁 (是给/买给…) and 写X就行. The figures below are after.",
    V3_HOLDOUT: "Written after the rules above were done and run once, with no change after: every category 1.000, "
                "look-alikes 15 of 15. The same hand wrote rules and cases, so this is weaker evidence than an outside corpus.",
}


V2_ABOUT = {
    V3_PHONES: "foreign phones in 20+ national plans, with and without a phone word, and look-alikes full of digits",
    V3_ECOMMERCE: "order, tracking and invoice numbers, names at field boundaries and untitled names, and product ids that must survive",
    V3_HOLDOUT: "foreign phones, order, invoice and tracking numbers, names in fields, and look-alikes, written after the v3 rules",
}


def v2_lines(path=V2_CASES):
    rows, prec, (kept, n_look), misses, false_hits = score_v2(path)
    lines = [
        "",
        f"Hand-written cases (`{path.relative_to(ROOT)}`: {V2_ABOUT.get(path, 'names, whole addresses, handles, foreign phones, postcodes')}; zh and en; "
        f"written as customers write, apart from the rules, and not tuned case by case). Target: typed recall >= {V2_TARGET} per "
        f"category, look-alikes kept >= {V2_TARGET}.",
        "",
        V2_FIRST.get(path, ""),
        "",
        "| category | lang | gold | typed recall | any-type recall |",
        "| --- | --- | ---: | ---: | ---: |",
    ] + [f"| {cat} | {lang} | {n} | {tr:.3f} | {ar:.3f} |" for cat, lang, n, tr, ar in rows] + [
        "",
        f"- Look-alikes (product and brand names, policy text, SKUs, prices) left untouched: {kept} of {n_look} ({kept / max(n_look, 1):.3f}).",
        "- Precision by predicted type (span overlaps a gold span): " + ", ".join(f"{t} {p:.3f} ({n})" for t, n, p in prec) + ".",
    ]
    if misses:
        lines += ["", f"Misses ({len(misses)}):", ""] + [f"- {t}/{lang}: `{v}` in `{text}` -> {found}" for t, lang, v, text, found in misses]
    if false_hits:
        lines += ["", f"False hits on look-alikes ({len(false_hits)}):", ""] + [f"- `{text}` -> {found}" for text, found in false_hits]
    below = [(cat, lang) for cat, lang, _n, tr, _a in rows if lang == "all" and tr < V2_TARGET]
    return lines, below, kept / max(n_look, 1)


def hard_recall(n=100, seed=3):
    rng = random.Random(seed)
    out = []
    for name, make in HARD.items():
        hit = 0
        for _ in range(n):
            template, value = make(rng)
            text = template.format(value)
            s = text.index(value)
            covered = {i for sp in detect(text) for i in range(sp.start, sp.end)}
            hit += all(i in covered for i in range(s, s + len(value)))
        out.append((name, hit / n))
    return out


ADVERSARIAL = {
    "20k chars of 'a' then '@' and 3k labels": "a" * 20000 + "@" + "b." * 3000,
    "3k repeated name cue words": "收件人" * 3000 + "Name: " * 2000,
    "5k phone-like digit pairs": "-".join("13" for _ in range(5000)),
    "3k repeated road names": "北京市朝阳区" + "建国路" * 3000,
    "10k spaced single digits": " ".join("1" for _ in range(10000)),
}


def adversarial_ms():
    out = []
    for name, text in ADVERSARIAL.items():
        t0 = time.process_time()
        detect(text)
        out.append((name, len(text), (time.process_time() - t0) * 1000))
    return out


def rate(lines, fn, repeats=3):
    best = 0.0
    for _ in range(repeats):
        # CPU time of this process, not wall time: on a shared machine wall time mostly measures the neighbours.
        t0 = time.process_time()
        for line in lines:
            fn(line)
        best = max(best, len(lines) / max(time.process_time() - t0, 1e-9))
    return best


def jddc_lines():
    path = ROOT.parent / "shared" / "data" / "jddc" / "jddc_chat_sample.txt"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return ["\t".join(line.rstrip("\n").split("\t")[6:]) for line in f]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="single-PII and negative cases (>= 2000)")
    ap.add_argument("--mixed", type=int, default=600, help="lines with 3 PII values each")
    ap.add_argument("--noisy", type=int, default=600, help="structured PII glued inside random CJK/Latin filler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; do not write docs/bench/privacy.md")
    ap.add_argument("--v2-only", action="store_true", help="score only the hand-written cases (bench/data/redact_cases_v2.jsonl)")
    args = ap.parse_args(argv)
    if args.v2_only:
        for path in (V2_CASES, V2_HOLDOUT, V3_PHONES, V3_ECOMMERCE, V3_HOLDOUT):
            print("\n".join(v2_lines(path)[0]))
        return 0

    cases = make_cases(args.n, seed=args.seed)
    rng = random.Random(args.seed + 1)
    mixed = [make_mixed_case(rng, "zh" if i % 2 == 0 else "en") for i in range(args.mixed)]
    # structured types only: free filler glued to a name or address changes where it ends, by design
    noisy = [make_noisy_case(rng, STRUCTURED[i % len(STRUCTURED)], "zh" if i % 2 == 0 else "en") for i in range(args.noisy)]
    all_cases = cases + mixed + noisy
    rows, any_recall, neg_cases, neg_flagged, misses = score(all_cases)

    rng = random.Random(args.seed + 2)
    clean = [clean_line(rng, "zh" if i % 2 == 0 else "en") for i in range(20000)]
    pii = [c.text for c in all_cases if c.gold]
    jddc = jddc_lines()
    speeds = [("clean chat lines (generated, zh+en)", clean), ("PII lines (generated, 1-3 values each)", pii)]
    if jddc:
        speeds.append(("real JDDC sample (already masked)", jddc))
    speed_rows = [(name, len(lines), rate(lines, redact), rate(lines, str.split)) for name, lines in speeds]
    jddc_flagged = Counter(sp.type for line in jddc for sp in detect(line))
    jddc_lines_flagged = sum(bool(detect(line)) for line in jddc)
    load = os.getloadavg()

    n_pos = sum(1 for c in all_cases if c.gold)
    lines = [
        "## Redaction (`endcloud.privacy`)",
        "",
        f"Generated by `bench/bench_redact.py --n {args.n} --mixed {args.mixed} --noisy {args.noisy} --seed {args.seed}`: "
        f"{len(all_cases):,} cases ({n_pos:,} with PII, {neg_cases:,} look-alike-only negatives; zh and en alternate; "
        f"{args.mixed} lines carry 3 PII values each; {args.noisy} glue a structured value inside random CJK/Latin filler).",
        "The generator (`endcloud.privacy.synth`) and the detectors were written together, so these figures say that every "
        "format the generator knows is handled, not what an independent corpus would score; the real JDDC line and the limits below are the outside view.",
        "Recall: gold span fully covered by predicted spans of the same type. Precision: predicted span overlaps a gold span of its type. "
        "F2 = 5PR/(4P+R).",
        "",
        "| type | gold | predicted | precision | recall | F2 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t, g, p, prec, rec, f2 in rows:
        name = f"**{t}**" if t == "ALL" else (f"{t} (structured)" if t in STRUCTURED else t)
        lines.append(f"| {name} | {g:,} | {p:,} | {prec:.4f} | {rec:.4f} | {f2:.4f} |")
    lines += [
        "",
        f"- Any-type recall (share of gold PII characters redacted at all): {any_recall:.4f}.",
        f"- Look-alike-only negatives with any false hit: {neg_flagged} of {neg_cases:,}.",
        (f"- Real JDDC sample (PII already masked by its publisher, so every hit is a false positive or a leak): "
         f"{jddc_lines_flagged} of {len(jddc):,} lines flagged ({dict(jddc_flagged)}); all masked tokens survive (tests/privacy/test_realdata.py)."
         if jddc else "- Real JDDC sample: ../shared/data absent, skipped."),
        f"- Recall on the structured types (PHONE, ID, CARD, EMAIL, ORDER, TRACKING): "
        + ", ".join(f"{t} {rec:.4f}" for t, _g, _p, _pr, rec, _f in rows if t in STRUCTURED) + ".",
        "",
        "Speed: one thread, `redact()` per line with a fresh vault, lines per second of process CPU time (best of 3 passes); `str.split` on the same lines shows how "
        f"loaded the machine was (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores while measuring).",
        "",
        "| lines | count | redact lines/s | str.split lines/s | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, n, r, base in speed_rows:
        lines.append(f"| {name} | {n:,} | {r:,.0f} | {base:,.0f} | {r / base:.3f} |")
    lines += [
        "",
        "Worst cases (one `detect` call on a long adversarial input; every pattern is bounded so time stays linear):",
        "",
        "| input | chars | ms |",
        "| --- | ---: | ---: |",
    ] + [f"| {name} | {n:,} | {ms:.1f} |" for name, n, ms in adversarial_ms()]
    lines += [
        "",
        "Harder forms and known limits (100 cases each, any-type recall; not in the table above). A name without a cue word "
        "is found when it is a listed surname with common given-name characters after a word that hands something to a "
        "person (转告张伟一声), or a listed first name in context (Thanks John); addresses need a house number or admin "
        "level; the 15-digit ID is caught as a bare ORDER number:",
        "",
        "| case | recall |",
        "| --- | ---: |",
    ] + [f"| {name} | {rec:.2f} |" for name, rec in hard_recall()]
    if misses:
        lines += ["", "First misses:", ""] + [f"- {t}: `{v}` in `{text}`" for t, v, text in misses]
    v2, v2_below, v2_kept = v2_lines()
    lines += v2 + v2_lines(V2_HOLDOUT)[0] + v2_lines(V3_PHONES)[0] + v2_lines(V3_ECOMMERCE)[0] + v2_lines(V3_HOLDOUT)[0]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        out = ROOT / "docs" / "bench" / "privacy.md"
        write_text_atomic(out, "# Privacy room benchmarks\n\n" + report)
        print(f"wrote {out.relative_to(ROOT)}")
    bad = [t for t, _g, _p, _pr, rec, _f in rows if t in STRUCTURED and rec < 1.0]
    if bad:
        print(f"structured recall below 1.0 for: {', '.join(bad)}", file=sys.stderr)
        return 1
    if v2_below or v2_kept < V2_TARGET:
        print(f"hand-written cases below {V2_TARGET}: {v2_below or ''} look-alikes kept {v2_kept:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
