#!/usr/bin/python3
"""Writes tests/fixtures/optimizer_adamw/: a few training steps of a tiny
model (MLA + MoE + Engram) with PyTorch's optimizers, step by step.

The step is memoe's (src/train/trainer.cc): gradients zeroed; grad_accum
micro-batches, each a mean cross-entropy, their gradients summed and divided
by grad_accum; the global gradient norm over every gradient (the Engram
tables' included); clipping to `clip` when the norm exceeds it; the
learning rate of the warmup + cosine schedule; then
  - torch.optim.AdamW on the dense parameters, weight decay on the 2-D
    matrices only (projections, router gate, embeddings, lm_head, Engram
    value/key projections), none on norm scales, biases and the Engram short
    conv (a depthwise per-channel filter, [C, 1, k]);
  - torch.optim.SparseAdam on the Engram tables: only the rows the hash read
    this step (with their gradient, zero or not), lr * table_lr_mult, no
    decay, bias correction by the global step count (SparseAdam's eps is
    scaled by sqrt(1 - beta2^t) each step, so that it sits where AdamW's
    does: added to sqrt(v / (1 - beta2^t)));
  - the router bias update of spec 4, bias_e += gamma * sign(mean load -
    load_e), with the loads of all micro-batches of the step.
Everything runs in float64 from float32-rounded initial weights.

Files: config.json + model.safetensors (the initial model); ids.npy and
targets.npy (int64 [steps, grad_accum, batch, seq]; targets[t] is the token
scored at position t, -1 ignored); step_<k>.safetensors (F32, every float
tensor after step k, correction biases included); expected.json
(hyper-parameters, and per step the loss, gradient norm, learning rate,
whether it clipped, and how many Engram rows it updated).

    /usr/bin/python3 reference/make_optimizer_fixture.py [--out tests/fixtures]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as MF  # noqa: E402
import model as M  # noqa: E402
import safetensors_io  # noqa: E402

NAME = "optimizer_adamw"
CONFIG = {
    "vocab_size": 48, "hidden_size": 16, "num_hidden_layers": 2, "intermediate_size": 24,
    "first_k_dense_replace": 1, "moe_intermediate_size": 8, "n_routed_experts": 4,
    "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1, "n_shared_experts": 1,
    "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
    "attention": "mla", "num_attention_heads": 2, "q_lora_rank": 8, "kv_lora_rank": 8,
    "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4,
    "rope_theta": 10000.0, "max_position_embeddings": 64, "rope_scaling": None,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hc_mult": 1,
    "bias_update_speed": 0.01,
    # Tables of ~100 rows each, so that a step reads about half of them.
    "engram": {"layer_ids": [1], "max_ngram_size": 3, "table_sizes": [97, 101],
               "n_embed_per_ngram": 8, "n_head_per_ngram": 2, "kernel_size": 3,
               "seed": 0, "pad_id": 0, "table_lr_mult": 3.0},
}
TRAIN = {"steps": 6, "grad_accum": 2, "batch": 2, "seq": 16, "lr": 1e-2, "warmup": 2,
         "min_lr_ratio": 0.1, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
         "clip": 1.3}
MIN_CLIP_MARGIN = 1e-3  # |norm / clip - 1| on every step, so float32 clips alike
MAX_BYTES = 1024 * 1024


def lr_at(step, t):
    """src/train/schedule.h: linear warmup from 0, cosine to min_lr_ratio."""
    if t["warmup"] > 0 and step < t["warmup"]:
        return t["lr"] * (step + 1) / t["warmup"]
    span = max(1, t["steps"] - t["warmup"])
    progress = min(1.0, (step - t["warmup"]) / span)
    return t["lr"] * (t["min_lr_ratio"] + (1 - t["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress)))


def is_table(name):
    return name.endswith("engram.embedding.weight")


def decays(name, p):
    """The weight-decay rule: 2-D matrices (the short conv is 3-D)."""
    return p.dim() == 2 and not is_table(name)


def routing_problems(trace):
    out = []
    for i, rec in trace.items():
        moe = rec.get("moe")
        if moe is not None:
            if moe["expert_gap"].min().item() < MF.MIN_GAP:
                out.append(f"layer {i}: expert gap {moe['expert_gap'].min().item():.2e}")
            if moe["group_gap"] is not None and moe["group_gap"].min().item() < MF.MIN_GAP:
                out.append(f"layer {i}: group gap {moe['group_gap'].min().item():.2e}")
        eg = rec.get("engram")
        if eg is not None and eg["gate_score"].abs().min().item() < MF.MIN_GATE_SCORE:
            out.append(f"layer {i}: Engram gate score {eg['gate_score'].abs().min().item():.2e}")
    return out


def draw(seed, t):
    cfg = M.Config(json.loads(json.dumps(CONFIG)))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    token_map = MF.random_token_map(cfg.vocab_size, cfg.vocab_size * 2 // 3, rng)
    model = M.MemoeForCausalLM(cfg, token_map).double()
    MF.random_weights(model, gen)
    shape = (t["steps"], t["grad_accum"], t["batch"], t["seq"])
    ids = rng.integers(0, cfg.vocab_size, size=shape, dtype=np.int64)
    ids[:, :, 1, 8:12] = ids[:, :, 0, 2:6]  # repeated 4-grams: Engram rows read twice
    targets = np.concatenate([ids[..., 1:], np.full(shape[:-1] + (1,), -1, dtype=np.int64)], axis=-1)
    targets[2, 0, 0, 3:7] = -1  # a few ignored targets
    MF.scale_correction_bias(model, torch.from_numpy(ids[0, 0]), gen)
    return model, ids, targets


def train(model, ids, targets, t):
    """Runs the steps; returns (per-step records, per-step float tensors) or
    raises ValueError naming a near-tie."""
    cfg = model.cfg
    params = dict(model.named_parameters())
    dense = {n: p for n, p in params.items() if not is_table(n)}
    tables = {n: p for n, p in params.items() if is_table(n)}
    adamw = torch.optim.AdamW(
        [{"params": [p for n, p in dense.items() if decays(n, p)], "weight_decay": t["weight_decay"]},
         {"params": [p for n, p in dense.items() if not decays(n, p)], "weight_decay": 0.0}],
        lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["eps"])
    sparse = torch.optim.SparseAdam(list(tables.values()), lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["eps"])
    gates = {i: layer.mlp.gate for i, layer in enumerate(model.model.layers) if layer.is_moe}
    engram_layer = {f"model.layers.{i}.engram.embedding.weight": i for i in cfg.engram["layer_ids"]}
    ever_read = {n: set() for n in tables}
    records, snapshots = [], []
    for step in range(t["steps"]):
        for p in params.values():
            p.grad = None
        loads = {i: torch.zeros(cfg.n_routed_experts, dtype=torch.int64) for i in gates}
        read = {n: set() for n in tables}
        loss = 0.0
        for micro in range(t["grad_accum"]):
            x = torch.from_numpy(ids[step, micro])
            labels = torch.cat([torch.full((x.shape[0], 1), -1), torch.from_numpy(targets[step, micro, :, :-1])], 1)
            trace = {}
            _, micro_loss = model(x, labels, trace=trace)
            problems = routing_problems(trace)
            if problems:
                raise ValueError(f"step {step}: {problems[0]}")
            micro_loss.backward()
            loss += micro_loss.item()
            for i in gates:
                loads[i] += torch.bincount(trace[i]["moe"]["idx"].reshape(-1), minlength=cfg.n_routed_experts)
            for n, i in engram_layer.items():
                read[n].update(trace[i]["engram"]["rows"].reshape(-1).tolist())
        loss /= t["grad_accum"]
        with torch.no_grad():
            for p in params.values():
                if p.grad is None:  # e.g. an expert no token chose: memoe's gradient is zero
                    p.grad = torch.zeros_like(p)
                p.grad /= t["grad_accum"]
            norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params.values()))
            if abs(norm / t["clip"] - 1) < MIN_CLIP_MARGIN:
                raise ValueError(f"step {step}: gradient norm {norm} too close to the clip")
            clipped = norm > t["clip"]
            if clipped:
                for p in params.values():
                    p.grad *= t["clip"] / norm
        lr = lr_at(step, t)
        for g in adamw.param_groups:
            g["lr"] = lr
        for g in sparse.param_groups:
            g["lr"] = lr * cfg.engram["table_lr_mult"]
            # SparseAdam adds eps to sqrt(v), AdamW (and memoe) to sqrt(v / bc2):
            # eps * sqrt(bc2) makes the two the same update.
            g["eps"] = t["eps"] * math.sqrt(1 - t["beta2"] ** (step + 1))
        adamw.step()
        # The tables' gradient as SparseAdam takes it: the rows read, nothing else.
        skipped = 0
        for n, p in tables.items():
            rows = torch.tensor(sorted(read[n]), dtype=torch.int64)
            skipped += len(ever_read[n] - read[n])
            ever_read[n] |= read[n]
            p.grad = torch.sparse_coo_tensor(rows[None], p.grad[rows], p.shape)
        sparse.step()
        with torch.no_grad():
            for i, gate in gates.items():
                c = loads[i].to(torch.float64)
                gate.e_score_correction_bias += cfg.bias_update_speed * torch.sign(c.mean() - c)
        records.append({"loss": loss, "grad_norm": norm, "lr": lr, "clipped": clipped,
                        "engram_rows_updated": sum(len(r) for r in read.values()),
                        "engram_rows_with_moments_not_read": skipped,
                        "loads": {str(i): loads[i].tolist() for i in gates}})
        snapshots.append({n: v.detach().numpy().astype(np.float32) for n, v in model.named_float_tensors().items()})
    return records, snapshots


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = TRAIN
    for seed in range(100, 400):
        model, ids, targets = draw(seed, t)
        path = os.path.join(args.out, NAME)
        M.save_model(model, path)  # the initial weights, float32
        try:
            records, snapshots = train(model, ids, targets, t)
        except ValueError as e:
            print(f"seed {seed} redrawn ({e})")
            continue
        idle = [s for s, r in enumerate(records) if min(min(c) for c in r["loads"].values()) == 0]
        if idle:
            print(f"seed {seed} redrawn (an expert gets no token on step {idle[0]})")
            continue
        clips = [r["clipped"] for r in records]
        if all(clips) or not any(clips):
            print(f"seed {seed} redrawn (clipped on {sum(clips)} of {len(clips)} steps)")
            continue
        break
    else:
        raise SystemExit("no seed without near-ties")
    if not any(r["engram_rows_with_moments_not_read"] for r in records):
        raise SystemExit("every table row is read on every step: lazy Adam would go untested")
    np.save(os.path.join(path, "ids.npy"), ids)
    np.save(os.path.join(path, "targets.npy"), targets)
    for k, snap in enumerate(snapshots, 1):
        safetensors_io.save(os.path.join(path, f"step_{k}.safetensors"), snap)
    decayed = sorted(n for n, p in model.named_parameters() if decays(n, p))
    expected = dict(t, seed=seed, table_lr_mult=model.cfg.engram["table_lr_mult"],
                    bias_update_speed=model.cfg.bias_update_speed, decayed=decayed, steps_record=records)
    with open(os.path.join(path, "expected.json"), "w") as f:
        f.write(MF.dump_json(expected) + "\n")
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    print(f"{NAME}: seed {seed}, losses {[round(r['loss'], 4) for r in records]}, "
          f"norms {[round(r['grad_norm'], 3) for r in records]}, {size // 1024} KB")
    if size > MAX_BYTES:
        raise SystemExit(f"{NAME}: {size} bytes, over the {MAX_BYTES} byte budget")


if __name__ == "__main__":
    main()
