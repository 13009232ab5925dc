"""Training throughput: length-bucketed batches vs a plain loop that pads every row to 256.

Same data (shop-like chats: short customer turns, a few long policy replies), same model
(the demo base size, random weights: speed does not depend on what the weights hold),
same tuner and batch size. Counts only real (non-pad) tokens. Prints both figures and
the ratio.

    .venv/bin/python bench/bench_train.py [--examples 256] [--batch-size 8] [--method lora] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=256, help="training examples per variant (one pass)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--method", default="lora", help="lora | prefix | ptuning-v2")
    ap.add_argument("--pad-to", type=int, default=256, help="the plain loop pads every row to this length")
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch
    from peft import get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from bench_train_data import shop_chats, shop_examples
    from endcloud.end.data import Encoder, collate, length_buckets, plain_batches
    from endcloud.end.tokenizer import train_tokenizer
    from endcloud.end.tuners import make_peft_config

    torch.set_num_threads(args.threads)
    chats = shop_chats(1500, seed=1)
    tok = train_tokenizer((m["content"] for c in chats for m in c), vocab_size=4000)
    examples = shop_examples(600, seed=2)[: args.examples]
    enc = Encoder(tok).encode_all(examples)
    lengths = sorted(len(e) for e in enc)
    print(f"data: {len(enc)} examples, tokens/example median {lengths[len(lengths) // 2]}, "
          f"p90 {lengths[int(0.9 * len(lengths))]}, max {lengths[-1]}")

    def fresh_model():
        torch.manual_seed(0)
        m = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=512 if args.hidden == 192 else 4 * args.hidden,
            num_hidden_layers=args.layers, num_attention_heads=6 if args.hidden % 6 == 0 else 4, num_key_value_heads=2,
            tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        ))
        pm = get_peft_model(m, make_peft_config(args.method, num_virtual_tokens=16))
        pm.train()
        return pm

    n = len(enc)
    variants = {
        f"plain, pad to {args.pad_to}": (plain_batches(n, args.batch_size, seed=0), args.pad_to),
        "plain, pad to batch max": (plain_batches(n, args.batch_size, seed=0), None),
        "length-bucketed (ours)": (length_buckets([len(e) for e in enc], args.batch_size, seed=0), None),
    }
    state = {}
    for name in variants:
        model = fresh_model()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        state[name] = {"model": model, "opt": opt, "real": 0, "computed": 0, "seconds": 0.0}
    # Interleave the variants batch by batch so that a busy machine slows all of them alike.
    for i in range(max(len(b) for b, _ in variants.values())):
        for name, (batches, pad_to) in variants.items():
            if i >= len(batches):
                continue
            st = state[name]
            batch = collate([enc[j] for j in batches[i]], tok.pad_token_id, pad_to=pad_to)
            t0 = time.perf_counter()
            st["model"](**batch).loss.backward()
            st["opt"].step()
            st["opt"].zero_grad(set_to_none=True)
            st["seconds"] += time.perf_counter() - t0
            st["real"] += int(batch["attention_mask"].sum())
            st["computed"] += batch["input_ids"].numel()
    rate = {}
    for name, st in state.items():
        rate[name] = st["real"] / st["seconds"]
        print(f"{name:<28} {rate[name]:9.0f} real tokens/s   ({st['real']} real of {st['computed']} computed, "
              f"{100 * st['real'] / st['computed']:.0f}% useful, {st['seconds']:.1f}s)")
    plain, dynamic, bucket = rate.values()
    print(f"ratio bucketed / plain-{args.pad_to}: {bucket / plain:.2f}x   (bucketed / pad-to-batch-max: {bucket / dynamic:.2f}x)")
    return 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        raise SystemExit(main())
