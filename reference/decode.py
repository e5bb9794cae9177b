#!/usr/bin/python3
"""Inference with a KV cache for the PyTorch reference, written from the spec
independently of the C++ engine: the peer that memoe_decode_bench times the
engine against, and a second implementation of the cache to check.

The cache holds, per layer, MLA's normed latent and rotated shared key (the
absorbed form: the query's no-rope part goes into the latent space through
kv_b_proj's key rows, the output comes back through its value rows) or GQA's
rotated keys and values; per Engram layer the short conv's last
(kernel-1)*N normed inputs; and the sequence's compressed ids for the hash.

    /usr/bin/python3 reference/decode.py --check --model DIR
        logits through the cache (chunks of 1, 5 and all; prefill then decode)
        against the full forward pass; exits 1 beyond 1e-4 relative
    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 reference/decode.py --model DIR \\
        --prompt 256 --tokens 64 --threads 2 [--autocast]
        one JSON line {prefill_tokens_per_s, decode_tokens_per_s}: a random
        prompt prefilled in one pass, then greedy decode one token a step
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
from hashing import engram_rows  # noqa: E402
from layers import MLA  # noqa: E402


def rope_at(x, freqs, positions):
    """Rotates interleaved pairs of x [..., n, r] at the given positions [n]."""
    angles = positions.to(torch.float64)[:, None] * freqs[None, :]
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def causal_mask(first, n):
    """[n, first+n]: row i (position first+i) sees positions <= first+i."""
    t = torch.arange(first + n)
    return t[None, :] > (first + torch.arange(n))[:, None]


class Cache:
    def __init__(self, model):
        self.length = 0
        self.cids = torch.zeros(0, dtype=torch.int64)
        self.layers = [{} for _ in model.model.layers]


def mla_step(attn, x, entry, first):
    """x [n, d] -> attention output [n, d]; appends to entry's latent cache."""
    n = x.shape[0]
    H, nope, pe, dv, kvl = attn.H, attn.nope, attn.rope, attn.vdim, attn.kv_lora_rank
    pos = torch.arange(first, first + n)
    q = attn.q_proj(x) if hasattr(attn, "q_proj") else attn.q_b_proj(attn.q_a_layernorm(attn.q_a_proj(x)))
    q = q.view(n, H, nope + pe)
    q_nope, q_pe = q[..., :nope], rope_at(q[..., nope:].transpose(0, 1), attn.freqs, pos)  # q_pe [H, n, pe]
    ckv = attn.kv_a_proj_with_mqa(x)
    c = attn.kv_a_layernorm(ckv[:, :kvl])
    kpe = rope_at(ckv[:, kvl:], attn.freqs, pos)
    entry["c"] = torch.cat([entry["c"], c]) if "c" in entry else c
    entry["kpe"] = torch.cat([entry["kpe"], kpe]) if "kpe" in entry else kpe
    w = attn.kv_b_proj.weight.view(H, nope + dv, kvl)
    w_uk, w_uv = w[:, :nope], w[:, nope:]
    q_lat = torch.einsum("nhd,hdc->hnc", q_nope, w_uk.to(q_nope.dtype))
    scores = (torch.einsum("hnc,tc->hnt", q_lat, entry["c"].to(q_lat.dtype)) +
              torch.einsum("hnr,tr->hnt", q_pe, entry["kpe"].to(q_pe.dtype))) * attn.scale
    probs = torch.softmax(scores.float().masked_fill(causal_mask(first, n), float("-inf")), dim=-1)
    o_lat = torch.einsum("hnt,tc->nhc", probs.to(entry["c"].dtype), entry["c"])
    out = torch.einsum("nhc,hvc->nhv", o_lat, w_uv.to(o_lat.dtype)).reshape(n, H * dv)
    return attn.o_proj(out)


def gqa_step(attn, x, entry, first):
    n = x.shape[0]
    pos = torch.arange(first, first + n)
    q = rope_at(attn.q_proj(x).view(n, attn.H, attn.hd).transpose(0, 1), attn.freqs, pos)   # [H, n, hd]
    k = rope_at(attn.k_proj(x).view(n, attn.KV, attn.hd).transpose(0, 1), attn.freqs, pos)  # [KV, n, hd]
    v = attn.v_proj(x).view(n, attn.KV, attn.hd).transpose(0, 1)
    entry["k"] = torch.cat([entry["k"], k], dim=1) if "k" in entry else k
    entry["v"] = torch.cat([entry["v"], v], dim=1) if "v" in entry else v
    group = attn.H // attn.KV
    keys = entry["k"].repeat_interleave(group, dim=0).to(q.dtype)
    values = entry["v"].repeat_interleave(group, dim=0)
    scores = torch.matmul(q, keys.transpose(-1, -2)) * attn.scale
    probs = torch.softmax(scores.float().masked_fill(causal_mask(first, n), float("-inf")), dim=-1)
    out = torch.matmul(probs.to(values.dtype), values).transpose(0, 1).reshape(n, attn.H * attn.hd)
    return attn.o_proj(out)


def engram_step(eg, h, window_cids, pad_cid, entry):
    """h [n, d]; window_cids: compressed ids of the N-1 positions before the
    new ones (pad before the start) and of the new ones."""
    n = h.shape[0]
    rows = engram_rows(window_cids[None], pad_cid, eg.hash_multipliers.tolist(), eg.table_sizes.tolist(),
                       eg.N, eg.K)[0, -n:]
    e = eg.embedding.weight[rows].reshape(n, -1).to(h.dtype)
    key = eg.norm1[0](eg.key_projs[0](e))
    query = eg.norm2[0](h)
    s = (key * query).sum(dim=-1, keepdim=True) / math.sqrt(eg.d)
    alpha = torch.sigmoid(torch.sign(s) * torch.sqrt(s.abs().clamp(min=1e-6)))
    u = alpha * eg.value_proj(e)
    conv = eg.short_conv
    past = (conv.kernel - 1) * conv.dilation
    normed = conv.norms[0](u)
    hist = entry.get("conv", torch.zeros(past, eg.d, dtype=normed.dtype))
    seq = torch.cat([hist.to(normed.dtype), normed])                          # [past + n, d]
    y = F.conv1d(seq.t()[None], conv.conv.weight.to(seq.dtype), dilation=conv.dilation, groups=eg.d)[0].t()
    entry["conv"] = seq[-past:] if past else seq[:0]
    return u + F.silu(y)


def feed(model, cache, ids, all_logits=False):
    """ids int [n] at positions cache.length..; logits [n, V] or [1, V]."""
    cfg = model.cfg
    first, n = cache.length, ids.shape[0]
    token_map = getattr(model.model, "engram_token_map", None)
    h = model.model.embed_tokens(ids)
    if token_map is not None:
        new_cids = token_map[ids]
        before = cfg.engram["N"] - 1
        pad_cid = int(token_map[cfg.engram["pad_id"]])
        tail = cache.cids[-before:] if before else cache.cids[:0]
        window = torch.cat([torch.full((before - tail.shape[0],), pad_cid, dtype=torch.int64), tail, new_cids])
        cache.cids = torch.cat([cache.cids, new_cids])
    for layer, entry in zip(model.model.layers, cache.layers):
        if hasattr(layer, "engram"):
            h = h + engram_step(layer.engram, h, window, pad_cid, entry)
        x = layer.input_layernorm(h)
        attn = layer.self_attn
        h = h + (mla_step(attn, x, entry, first) if isinstance(attn, MLA) else gqa_step(attn, x, entry, first))
        x = layer.post_attention_layernorm(h)
        h = h + (layer.mlp(x[None])[0] if layer.is_moe else layer.mlp(x))
    cache.length += n
    final = model.model.norm(h if all_logits else h[-1:])
    return model.lm_head(final)


def check(model_dir):
    model = M.load_model(model_dir, torch.float32)
    V = model.cfg.vocab_size
    ids = torch.remainder(torch.arange(23) * 7 + 3, V)
    with torch.no_grad():
        want = model(ids[None])[0][0]
        worst = 0.0
        for chunk in (1, 5, 23):
            cache, rows = Cache(model), []
            for s in range(0, 23, chunk):
                rows.append(feed(model, cache, ids[s:s + chunk], all_logits=True))
            got = torch.cat(rows)
            worst = max(worst, ((got - want).abs().max() / want.abs().max()).item())
        cache = Cache(model)
        rows = [feed(model, cache, ids[:11], all_logits=True)]
        rows += [feed(model, cache, ids[t:t + 1]) for t in range(11, 23)]
        worst = max(worst, ((torch.cat(rows) - want).abs().max() / want.abs().max()).item())
    print(json.dumps({"max_relative_error": worst}))
    return 0 if worst <= 1e-4 else 1


def bench(model_dir, prompt, tokens, threads, autocast):
    torch.set_num_threads(threads)
    model = M.load_model(model_dir, torch.float32)
    V = model.cfg.vocab_size
    ids = torch.randint(0, V, (prompt,), generator=torch.Generator().manual_seed(3))
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.no_grad(), amp:
        feed(model, Cache(model), ids[:8])  # warm-up
        cache = Cache(model)
        t0 = time.perf_counter()
        logits = feed(model, cache, ids)
        prefill = prompt / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(tokens):
            logits = feed(model, cache, logits.float().argmax(dim=-1))
        decode = tokens / (time.perf_counter() - t0)
    print(json.dumps({"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--autocast", action="store_true", help="bf16 products under torch.autocast")
    a = ap.parse_args()
    if a.check:
        return check(a.model)
    return bench(a.model, a.prompt, a.tokens, a.threads, a.autocast)


if __name__ == "__main__":
    sys.exit(main())
