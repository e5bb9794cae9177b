#!/usr/bin/python3
"""Writes the committed test fixtures tests/fixtures/<name>/ from the reference.

Each fixture: config.json, model.safetensors (F32), ids.npy (int64 [B, L]),
logits.npy (float32 [B, L, V]), grads.safetensors (F32 d(mean loss)/d(every
float tensor), same names), expected.json. Everything is computed in float64
from the float32-rounded weights. A seed whose routing or Engram gate comes
near a tie is redrawn, so float32 engines route identically.

    /usr/bin/python3 reference/make_fixtures.py [--out tests/fixtures] [--only NAME]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
import safetensors_io  # noqa: E402

B, L = 2, 16            # the default shape; SHAPES overrides it per fixture
MIN_GAP = 1e-3          # selection-score gap at every top-k / group cut
MIN_GATE_SCORE = 1e-3   # |s| of the Engram gate, away from the sign() kink
MAX_FIXTURE_BYTES = 400 * 1024

FIXTURES = {
    # MLA with q LoRA, YaRN, dense layer 0, sigmoid MoE with group-limited
    # routing, Engram at layer 1. norm_topk_prob left out: sigmoid -> true.
    "mla_moe_engram": {
        "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 3, "intermediate_size": 32,
        "first_k_dense_replace": 1, "moe_intermediate_size": 8, "n_routed_experts": 8,
        "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2, "n_shared_experts": 1,
        "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
        "attention": "mla", "num_attention_heads": 4, "q_lora_rank": 16, "kv_lora_rank": 16,
        "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8,
        "rope_theta": 1000.0, "max_position_embeddings": 256,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hc_mult": 1,
        "engram": {"layer_ids": [1], "max_ngram_size": 3, "table_sizes": [100, 110],
                   "n_embed_per_ngram": 16, "n_head_per_ngram": 2, "kernel_size": 4,
                   "seed": 0, "pad_id": 0, "table_lr_mult": 5.0},
    },
    # GQA (4 query heads on 2 key/value heads, head_dim != hidden/heads), no
    # rope_scaling, softmax MoE without groups, tied embeddings, 4-gram Engram
    # at layers 0 and 2. norm_topk_prob left out: softmax -> false.
    "gqa_softmax_engram": {
        "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 3, "intermediate_size": 40,
        "first_k_dense_replace": 1, "moe_intermediate_size": 8, "n_routed_experts": 8,
        "num_experts_per_tok": 3, "n_group": 1, "topk_group": 1, "n_shared_experts": 1,
        "routed_scaling_factor": 1.5, "scoring_func": "softmax",
        "attention": "gqa", "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12,
        "rope_theta": 10000.0, "max_position_embeddings": 128, "rope_scaling": None,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hc_mult": 1,
        "engram": {"layer_ids": [0, 2], "max_ngram_size": 4, "table_sizes": [53, 61, 67],
                   "n_embed_per_ngram": 8, "n_head_per_ngram": 2, "kernel_size": 3,
                   "seed": 7, "pad_id": 0, "table_lr_mult": 5.0},
    },
    # MLA without q LoRA (v_head_dim != qk_nope_head_dim), MoE from layer 0
    # with 2 groups of 3 and softmax + explicit norm_topk_prob, 2 shared
    # experts, rms_norm_eps 1e-5, bigram Engram with 3 heads and pad_id 9.
    "mla_noq": {
        "vocab_size": 72, "hidden_size": 32, "num_hidden_layers": 3,
        "first_k_dense_replace": 0, "moe_intermediate_size": 8, "n_routed_experts": 6,
        "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "n_shared_experts": 2,
        "routed_scaling_factor": 2.0, "scoring_func": "softmax", "norm_topk_prob": True,
        "attention": "mla", "num_attention_heads": 4, "q_lora_rank": 0, "kv_lora_rank": 16,
        "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 12,
        "rope_theta": 10000.0, "max_position_embeddings": 128, "rope_scaling": None,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hc_mult": 1,
        "engram": {"layer_ids": [2], "max_ngram_size": 2, "table_sizes": [101],
                   "n_embed_per_ngram": 12, "n_head_per_ngram": 3, "kernel_size": 3,
                   "seed": 3, "pad_id": 9, "table_lr_mult": 5.0},
    },
}


# MLA with q LoRA and YaRN over 160 positions (beyond original_max 64, and
# across two 64-token attention tiles), one sequence; Engram at the dense
# layer 0, sigmoid MoE without groups at layer 1.
FIXTURES["mla_long"] = dict(
    FIXTURES["mla_moe_engram"], num_hidden_layers=2, n_group=1, topk_group=1,
    engram=dict(FIXTURES["mla_moe_engram"]["engram"], layer_ids=[0], seed=5))
# mla_moe_engram's model with the sequence-wise balance loss (spec 4) on.
FIXTURES["mla_aux_loss"] = dict(FIXTURES["mla_moe_engram"], seq_aux_loss_alpha=0.5)

# (batch, seq) where it is not (B, L).
SHAPES = {"mla_long": (1, 160)}


def random_token_map(vocab, compressed, rng):
    """Non-identity map: every key used, several ids per key, ids numbered
    by first appearance as spec 5.1 numbers them."""
    keys = np.concatenate([rng.permutation(compressed), rng.integers(0, compressed, vocab - compressed)])
    keys = rng.permutation(keys)
    first = {}
    return np.asarray([first.setdefault(int(k), len(first)) for k in keys], dtype=np.int64)


def random_weights(model, gen):
    """Weights of meaningful scale, all exactly float32-representable."""
    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std

    with torch.no_grad():
        for n, t in model.named_float_tensors().items():
            if n.endswith("e_score_correction_bias"):
                continue  # set by scale_correction_bias
            if n.endswith(".bias"):
                v = normal(t.shape, 0.1)
            elif t.dim() == 1:  # RMSNorm scales
                v = 1.0 + normal(t.shape, 0.1)
            elif n == "model.embed_tokens.weight":  # smaller when it is also lm_head
                v = normal(t.shape, 0.3 if model.cfg.tie_word_embeddings else 1.0)
            elif n.endswith("engram.embedding.weight"):
                v = normal(t.shape, 0.5)
            elif n.endswith("short_conv.conv.weight"):
                v = normal(t.shape, 0.5)
            else:  # linear [out, in]
                v = normal(t.shape, t.shape[1] ** -0.5)
            t.copy_(v.float().double())


def scale_correction_bias(model, ids, gen):
    """Draws each correction bias at twice the median score gap at its
    layer's top-k cut, so that it changes which experts win for some tokens."""
    for i, layer in enumerate(model.model.layers):
        if not layer.is_moe:
            continue
        trace = {}
        with torch.no_grad():
            model(ids, trace=trace)  # this layer's bias is still zero here
        gap = trace[i]["moe"]["expert_gap"]
        size = float(gap[torch.isfinite(gap)].median())
        bias = layer.mlp.gate.e_score_correction_bias
        with torch.no_grad():
            bias.copy_((torch.randn(bias.shape, generator=gen, dtype=torch.float64) * 2 * size).float().double())


def near_ties(model, trace):
    """Problems that would let a float32 engine route or gate differently,
    or leave a spec rule untested."""
    problems = []
    eg = model.cfg.engram
    if eg is not None and eg["pad_id"] != 0 and int(model.model.engram_token_map[eg["pad_id"]]) == eg["pad_id"]:
        problems.append("compressed pad id equals pad_id: would not test the map")
    for i, rec in trace.items():
        moe = rec.get("moe")
        if moe is not None:
            if moe["expert_gap"].min().item() < MIN_GAP:
                problems.append(f"layer {i}: expert gap {moe['expert_gap'].min().item():.2e}")
            if moe["group_gap"] is not None and moe["group_gap"].min().item() < MIN_GAP:
                problems.append(f"layer {i}: group gap {moe['group_gap'].min().item():.2e}")
            changed = sum(set(a) != set(b) for a, b in zip(moe["idx"].tolist(), moe["no_bias_idx"].tolist()))
            if changed == 0:
                problems.append(f"layer {i}: the correction bias changes no selection")
            unused = model.cfg.n_routed_experts - len(set(moe["idx"].reshape(-1).tolist()))
            if unused:
                problems.append(f"layer {i}: {unused} experts get no token")
        eg = rec.get("engram")
        if eg is not None and eg["gate_score"].abs().min().item() < MIN_GATE_SCORE:
            problems.append(f"layer {i}: Engram gate score {eg['gate_score'].abs().min().item():.2e}")
    return problems


def draw(name, raw, seed):
    cfg = M.Config(json.loads(json.dumps(raw)))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    token_map = None
    if cfg.engram is not None:
        token_map = random_token_map(cfg.vocab_size, cfg.vocab_size * 2 // 3, rng)
    model = M.MemoeForCausalLM(cfg, token_map).double()
    random_weights(model, gen)
    batch, seq = SHAPES.get(name, (B, L))
    ids = rng.integers(0, cfg.vocab_size, size=(batch, seq), dtype=np.int64)
    # A repeated 4-gram: the same Engram rows touched twice.
    if batch > 1:
        ids[1, 8:12] = ids[0, 2:6]
    else:
        ids[0, seq - 10:seq - 6] = ids[0, 2:6]
    ids = torch.from_numpy(ids)
    if cfg.has_moe:
        scale_correction_bias(model, ids, gen)
    return model, ids


def _lists(t, digits=None):
    return t.tolist() if digits is None else np.round(t.numpy(), digits).tolist()


def expected_record(model, ids, trace, loss, logits):
    cfg = model.cfg
    V = cfg.vocab_size
    B, L = ids.shape
    token_losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none").view(B, L - 1)
    out = {"loss": loss.item(), "batch": B, "seq": L, "token_losses": _lists(token_losses.detach()),
           "logits_abs_max": logits.abs().max().item(), "moe": {}, "engram": {}}
    if cfg.has_moe and cfg.seq_aux_loss_alpha > 0:
        out["aux_loss"] = loss.item() - token_losses.mean().item()
    for i, rec in sorted(trace.items()):
        if "moe" in rec:
            moe = rec["moe"]
            group_gap = moe["group_gap"]
            out["moe"][str(i)] = {
                "experts": _lists(moe["idx"].view(B, L, -1)),
                "weights": _lists(moe["weights"].view(B, L, -1)),
                "min_expert_gap": moe["expert_gap"].min().item(),
                "min_group_gap": None if group_gap is None else group_gap.min().item(),
                "bias_changed_tokens": sum(set(a) != set(b) for a, b in
                                           zip(moe["idx"].tolist(), moe["no_bias_idx"].tolist())),
            }
        if "engram" in rec:
            eg = rec["engram"]
            layer = model.model.layers[i].engram
            out["engram"][str(i)] = {
                "rows": _lists(eg["rows"]),
                "alpha": _lists(eg["alpha"]),
                "min_abs_gate_score": eg["gate_score"].abs().min().item(),
                "hash_multipliers": layer.hash_multipliers.tolist(),
                "table_sizes": layer.table_sizes.tolist(),
            }
    if cfg.engram is not None:
        token_map = model.model.engram_token_map
        out["compressed_vocab"] = int(token_map.max()) + 1
        out["compressed_pad_id"] = int(token_map[cfg.engram["pad_id"]])
    return out


def dump_json(value, indent=0):
    """Objects one key a line, lists on one line: readable and diffable."""
    if isinstance(value, dict) and value:
        pad = " " * (indent + 1)
        items = [f"{pad}{json.dumps(k)}: {dump_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return json.dumps(value)


def write_fixture(name, raw, out_dir, first_seed):
    for seed in range(first_seed, first_seed + 500):
        model, ids = draw(name, raw, seed)
        trace = {}
        logits, loss = model(ids, trace=trace)
        problems = near_ties(model, trace)
        if not problems:
            break
        print(f"{name}: seed {seed} redrawn ({problems[0]})")
    else:
        raise SystemExit(f"{name}: no seed without near-ties")
    model.zero_grad()
    loss.backward()
    grads = {n: g.numpy().astype(np.float32) for n, g in model.gradients().items()}

    path = os.path.join(out_dir, name)
    M.save_model(model, path)
    np.save(os.path.join(path, "ids.npy"), ids.numpy())
    np.save(os.path.join(path, "logits.npy"), logits.detach().numpy().astype(np.float32))
    safetensors_io.save(os.path.join(path, "grads.safetensors"), grads)
    expected = expected_record(model, ids, trace, loss, logits.detach())
    expected["seed"] = seed

    # How closely the reference itself agrees in float32: a guide for tolerances.
    f32 = M.load_model(path, torch.float32)
    logits32, loss32 = f32(ids)
    loss32.backward()
    g32 = f32.gradients()
    expected["float32_reference"] = {
        "loss": loss32.item(),
        "max_abs_logit_diff": (logits32.detach().double() - logits.detach()).abs().max().item(),
        "max_abs_grad_diff": max((g32[n].double() - torch.from_numpy(g).double()).abs().max().item()
                                 for n, g in grads.items()),
    }
    with open(os.path.join(path, "expected.json"), "w") as f:
        f.write(dump_json(expected) + "\n")
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    print(f"{name}: seed {seed}, loss {loss.item():.6f}, {size // 1024} KB")
    if size > MAX_FIXTURE_BYTES:
        raise SystemExit(f"{name}: {size} bytes, over the {MAX_FIXTURE_BYTES} byte budget")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures"))
    ap.add_argument("--only", choices=sorted(FIXTURES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for k, (name, raw) in enumerate(FIXTURES.items()):
        if args.only in (None, name):
            write_fixture(name, raw, args.out, first_seed=1000 * (k + 1))


if __name__ == "__main__":
    main()
