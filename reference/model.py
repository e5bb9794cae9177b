#!/usr/bin/python3
"""Independent PyTorch reference of the memoe model (shared/spec/architecture.md).

Written from the spec alone and kept plain: the C++ engine is proven against
the numbers this file produces, so clarity wins over speed everywhere.
Runs in float64 or float32 (the dtype argument). Module attribute names equal
the checkpoint names of spec section 6, so state_dict() is the file.

    /usr/bin/python3 reference/model.py --selftest
    /usr/bin/python3 reference/model.py --model DIR --ids ids.npy [--dtype float32]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from config import Config, ConfigError  # noqa: E402,F401
from hashing import engram_hash_multipliers, engram_table_primes  # noqa: E402
from layers import GQA, MLA, Engram, MoE, RMSNorm, SwiGLU  # noqa: E402


class ModelError(ValueError):
    pass


class DecoderLayer(nn.Module):
    def __init__(self, cfg, i, engram_tables):
        super().__init__()
        d = cfg.hidden_size
        if i in engram_tables:
            self.engram = Engram(cfg, i, *engram_tables[i])
        self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.self_attn = MLA(cfg) if cfg.attention == "mla" else GQA(cfg)
        self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.is_moe = cfg.is_moe_layer(i)
        self.mlp = MoE(cfg) if self.is_moe else SwiGLU(d, cfg.intermediate_size)

    def forward(self, h, ids, token_map, trace=None, aux=None):
        if hasattr(self, "engram"):
            sub = {} if trace is not None else None
            h = h + self.engram(h, ids, token_map, sub)
            if sub is not None:
                trace["engram"] = sub
        h = h + self.self_attn(self.input_layernorm(h))
        x = self.post_attention_layernorm(h)
        if self.is_moe:
            sub = {} if trace is not None else None
            h = h + self.mlp(x, sub, aux)
            if sub is not None:
                trace["moe"] = sub
        else:
            h = h + self.mlp(x)
        return h


class Backbone(nn.Module):
    """The "model." prefix of the checkpoint names."""

    def __init__(self, cfg, token_map, engram_tables):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, engram_tables) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.engram is not None:
            self.register_buffer("engram_token_map", torch.as_tensor(token_map, dtype=torch.int64))


def default_engram_tables(cfg, token_map):
    """{layer: (hash multipliers [N], table sizes [(N-1)*K])} drawn from the config."""
    eg = cfg.engram
    vocab_compressed = int(np.max(token_map)) + 1
    primes = engram_table_primes(eg["table_sizes"], eg["layer_ids"], eg["N"], eg["K"])
    return {l: (engram_hash_multipliers(eg["seed"], l, eg["N"], vocab_compressed),
                np.asarray([p for per_n in primes[l] for p in per_n], dtype=np.int64))
            for l in eg["layer_ids"]}


def _check_engram_state(cfg, token_map, tables):
    eg = cfg.engram
    token_map = np.asarray(token_map)
    if token_map.shape != (cfg.vocab_size,) or token_map.dtype.kind not in "iu":
        raise ModelError(f"model.engram_token_map must be int64 [{cfg.vocab_size}], got {token_map.dtype} {list(token_map.shape)}")
    if token_map.min() < 0 or token_map.max() >= cfg.vocab_size:
        raise ModelError("model.engram_token_map has an id outside [0, vocab_size)")
    largest_cid = int(token_map.max())
    for l in eg["layer_ids"]:
        if l not in tables:
            raise ModelError(f"model.layers.{l}.engram: hash_multipliers / table_sizes missing")
        mult, sizes = (np.asarray(t) for t in tables[l])
        name = f"model.layers.{l}.engram"
        if mult.shape != (eg["N"],) or mult.dtype.kind not in "iu":
            raise ModelError(f"{name}.hash_multipliers must be int64 [{eg['N']}]")
        if sizes.shape != ((eg["N"] - 1) * eg["K"],) or sizes.dtype.kind not in "iu":
            raise ModelError(f"{name}.table_sizes must be int64 [{(eg['N'] - 1) * eg['K']}]")
        if (mult <= 0).any() or any(int(m) * largest_cid > 2 ** 63 - 1 for m in mult):
            raise ModelError(f"{name}.hash_multipliers must be positive and keep c*m within int64")
        if (sizes <= 0).any():
            raise ModelError(f"{name}.table_sizes must be positive")


class MemoeForCausalLM(nn.Module):
    def __init__(self, cfg, token_map=None, engram_tables=None):
        """token_map: int [V] (identity when None); engram_tables as
        default_engram_tables returns (drawn from the config when None)."""
        super().__init__()
        self.cfg = cfg
        tables = {}
        if cfg.engram is not None:
            if token_map is None:
                token_map = np.arange(cfg.vocab_size, dtype=np.int64)
            token_map = np.asarray(token_map, dtype=np.int64)
            tables = engram_tables if engram_tables is not None else default_engram_tables(cfg, token_map)
            _check_engram_state(cfg, token_map, tables)
        self.model = Backbone(cfg, token_map, tables)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids, labels=None, trace=None):
        """ids int [B, L] -> (logits [B, L, V], mean loss of logits[t] vs labels[t+1],
        plus the MoE layers' balance losses when seq_aux_loss_alpha > 0).
        labels defaults to ids; label -1 is ignored. trace (a dict) collects
        per-layer routing and Engram rows: trace[i] = {"moe": ..., "engram": ...}."""
        cfg = self.cfg
        ids = torch.as_tensor(ids)
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ModelError("ids must be an integer tensor [B, L]")
        ids = ids.long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
            raise ModelError(f"token id outside [0, {cfg.vocab_size})")
        token_map = getattr(self.model, "engram_token_map", None)
        h = self.model.embed_tokens(ids)
        aux = []  # the MoE layers' sequence-wise balance losses (seq_aux_loss_alpha > 0)
        for i, layer in enumerate(self.model.layers):
            sub = {} if trace is not None else None
            h = layer(h, ids, token_map, sub, aux)
            if sub:
                trace[i] = sub
        logits = self.lm_head(self.model.norm(h))
        labels = ids if labels is None else torch.as_tensor(labels).long()
        if labels.shape != ids.shape:
            raise ModelError("labels must have the shape of ids")
        V = cfg.vocab_size
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-1)
        if aux:
            loss = loss + sum(aux)
        return logits, loss

    def named_float_tensors(self):
        """Float checkpoint tensors by name (the tied lm_head left out)."""
        return {n: t for n, t in self.state_dict(keep_vars=True).items()
                if t.is_floating_point() and not (self.cfg.tie_word_embeddings and n == "lm_head.weight")}

    def gradients(self):
        """{name: grad} for every float tensor; zeros where none flowed (the
        correction bias, untouched Engram rows are already zero)."""
        out = {}
        for n, t in self.named_float_tensors().items():
            g = t.grad if isinstance(t, nn.Parameter) else None
            out[n] = torch.zeros_like(t) if g is None else g.detach().clone()
        return out


# ----------------------------------------------------------------------------
# Checkpoint directory: config.json + model.safetensors

def save_model(model, path, bf16=False):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(model.cfg.raw, f, indent=2)
        f.write("\n")
    tensors = {}
    for n, t in model.state_dict().items():
        if model.cfg.tie_word_embeddings and n == "lm_head.weight":
            continue
        arr = t.detach().cpu().numpy()
        tensors[n] = arr.astype(np.float32) if t.is_floating_point() else arr.astype(np.int64)
    safetensors_io.save(os.path.join(path, "model.safetensors"), tensors, bf16=bf16)


def load_model(path, dtype=torch.float64):
    with open(os.path.join(path, "config.json")) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config.json: not valid JSON ({e})") from None
    cfg = Config(raw)
    tensors = safetensors_io.load(os.path.join(path, "model.safetensors"))
    token_map, tables = None, None
    if cfg.engram is not None:
        if "model.engram_token_map" not in tensors:
            raise ModelError("model.engram_token_map missing from the checkpoint")
        token_map = tensors["model.engram_token_map"]
        tables = {}
        for l in cfg.engram["layer_ids"]:
            names = [f"model.layers.{l}.engram.{k}" for k in ("hash_multipliers", "table_sizes")]
            if all(n in tensors for n in names):
                tables[l] = tuple(tensors[n] for n in names)
        _check_engram_state(cfg, token_map, tables)
    model = MemoeForCausalLM(cfg, token_map, tables).to(dtype)
    expected = model.state_dict()
    if cfg.tie_word_embeddings and "lm_head.weight" in tensors:
        if not np.array_equal(tensors["lm_head.weight"], tensors.get("model.embed_tokens.weight")):
            raise ModelError("lm_head.weight differs from model.embed_tokens.weight but tie_word_embeddings is true")
        del tensors["lm_head.weight"]
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ModelError(f"unexpected tensor {unexpected[0]} in the checkpoint")
    with torch.no_grad():
        for n, t in expected.items():
            if cfg.tie_word_embeddings and n == "lm_head.weight":
                continue
            if n not in tensors:
                raise ModelError(f"tensor {n} missing from the checkpoint")
            src = tensors[n]
            if list(src.shape) != list(t.shape):
                raise ModelError(f"tensor {n} has shape {list(src.shape)}, expected {list(t.shape)}")
            if t.is_floating_point() != (src.dtype.kind == "f"):
                raise ModelError(f"tensor {n} has dtype {src.dtype}")
            t.copy_(torch.from_numpy(np.ascontiguousarray(src)).to(t.dtype))
    return model


def init_random(model, seed, std=0.02, zero_short_conv=True):
    """Plain training init: normal(std) matrices and tables, unit norms, zero
    biases; the Engram short conv starts at zero as memoe does (spec 5.4)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, t in model.named_float_tensors().items():
            if n.endswith("e_score_correction_bias") or n.endswith(".bias"):
                t.zero_()
            elif t.dim() == 1:  # every 1-D weight is an RMSNorm scale
                t.fill_(1.0)
            elif n.endswith("short_conv.conv.weight") and zero_short_conv:
                t.zero_()
            else:
                t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) * std)
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--selftest", action="store_true", help="check hashing vectors and model invariants")
    ap.add_argument("--model", help="model directory (config.json + model.safetensors)")
    ap.add_argument("--ids", help="int64 .npy [B, L] to evaluate")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--logits-out", help="write the float32 logits here (.npy)")
    args = ap.parse_args(argv)
    if args.selftest:
        import selftest
        return selftest.run()
    if not (args.model and args.ids):
        ap.error("give --selftest, or --model and --ids")
    model = load_model(args.model, getattr(torch, args.dtype))
    with torch.no_grad():
        logits, loss = model(torch.from_numpy(np.load(args.ids)))
    if args.logits_out:
        np.save(args.logits_out, logits.numpy().astype(np.float32))
    print(json.dumps({"loss": loss.item()}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, ModelError, safetensors_io.SafetensorsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
