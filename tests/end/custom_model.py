"""A tiny model that ships its own code, as ChatGLM3 does: a model folder whose config.json
`auto_map` points at a modeling file in the folder, loadable only with trust_remote_code.

    write_custom_model(out_dir, tokenizer)   # config.json (auto_map) + modeling_tinyglm.py + weights + tokenizer

Its attention fuses q, k and v into one `query_key_value` layer and names the output
projection `dense`, ChatGLM's names, so the tuners must find LoRA's targets without
`q_proj`. Its model_type (`tinyglm`) is in no table of ours or peft's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELING = '''
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class TinyGLMConfig(PretrainedConfig):
    model_type = "tinyglm"

    def __init__(self, vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, **kw):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_layers, self.num_heads = num_layers, num_heads
        super().__init__(**kw)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg.hidden_size
        self.heads = cfg.num_heads
        self.norm1, self.norm2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.query_key_value = nn.Linear(h, 3 * h)
        self.dense = nn.Linear(h, h)
        self.dense_h_to_4h = nn.Linear(h, 4 * h)
        self.dense_4h_to_h = nn.Linear(4 * h, h)

    def forward(self, x):
        b, n, h = x.shape
        q, k, v = self.query_key_value(self.norm1(x)).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, h)
        x = x + self.dense(a)
        return x + self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(self.norm2(x))))


class TinyGLMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = TinyGLMConfig
    base_model_prefix = "transformer"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.output_layer = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embedding

    def set_input_embeddings(self, value):
        self.embedding = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, inputs_embeds=None, **kw):
        x = self.embedding(input_ids) if inputs_embeds is None else inputs_embeds
        for layer in self.layers:
            x = layer(x)
        logits = self.output_layer(x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)
'''


def write_custom_model(out: Path, tokenizer, *, seed: int = 0) -> Path:
    """A saved custom-code model folder (random weights) with `tokenizer`."""
    import importlib.util

    import torch

    out.mkdir(parents=True, exist_ok=True)
    (out / "modeling_tinyglm.py").write_text(MODELING, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"tinyglm_{abs(hash(str(out)))}", out / "modeling_tinyglm.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    torch.manual_seed(seed)
    cfg = mod.TinyGLMConfig(vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=4,
                            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id)
    model = mod.TinyGLMForCausalLM(cfg)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    data = json.loads((out / "config.json").read_text(encoding="utf-8"))
    data["auto_map"] = {"AutoConfig": "modeling_tinyglm.TinyGLMConfig",
                        "AutoModelForCausalLM": "modeling_tinyglm.TinyGLMForCausalLM"}
    data["architectures"] = ["TinyGLMForCausalLM"]
    (out / "config.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    return out
