#!/usr/bin/python3
"""Training-step throughput of the PyTorch reference: the baseline the C++
trainer is timed against.

Builds the model of a config in float32 with random init, runs one warm-up
step and then S timed steps (forward, backward, torch.optim.AdamW, then the
auxiliary-loss-free bias update of spec 4) on fixed random ids, and prints one
JSON line {"tokens_per_s", "step_s", "loss"} (loss of the last timed step).
With --autocast, forward and loss run under torch.autocast("cpu",
dtype=torch.bfloat16), PyTorch's own mixed precision (fp32 weights and
optimizer, bf16 products): the fair peer of the engine's bf16.

    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 reference/bench_step.py \
        --config configs/x.json --batch 4 --seq 256 --steps 5 --threads 2
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
from layers import MoEGate  # noqa: E402


def optimizer_for(model, lr, weight_decay):
    """AdamW; Engram tables at table_lr_mult x lr without decay (spec 5.5),
    norms and biases without decay."""
    cfg = model.cfg
    tables, flat, matrices = [], [], []
    for n, p in model.named_parameters():
        if n.endswith("engram.embedding.weight"):
            tables.append(p)
        elif p.dim() == 1:
            flat.append(p)
        else:
            matrices.append(p)
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": flat, "weight_decay": 0.0}]
    if tables:
        groups.append({"params": tables, "weight_decay": 0.0, "lr": lr * cfg.engram["table_lr_mult"]})
    return torch.optim.AdamW(groups, lr=lr)


class LoadCounter:
    """Counts the tokens routed to each expert of each gate during a step."""

    def __init__(self, model):
        self.loads = {}
        for gate in model.modules():
            if isinstance(gate, MoEGate):
                gate.register_forward_hook(self._hook)

    def _hook(self, gate, inputs, output):
        idx = output[0]
        counts = torch.bincount(idx.reshape(-1), minlength=gate.weight.shape[0])
        self.loads[gate] = self.loads.get(gate, 0) + counts

    def update_biases(self, gamma):
        """bias_e += gamma * sign(mean load - load_e), then reset."""
        with torch.no_grad():
            for gate, counts in self.loads.items():
                counts = counts.to(gate.e_score_correction_bias.dtype)
                gate.e_score_correction_bias += gamma * torch.sign(counts.mean() - counts)
        self.loads = {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="config.json, or a directory holding one")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--ids", help="int64 .npy [batch, seq]: the batch to train on (default: random)")
    ap.add_argument("--autocast", action="store_true", help="bf16 mixed precision through torch.autocast")
    args = ap.parse_args()
    if min(args.batch, args.steps, args.threads) < 1 or args.seq < 2:
        ap.error("--batch, --steps and --threads must be >= 1, --seq >= 2")
    torch.set_num_threads(args.threads)

    path = os.path.join(args.config, "config.json") if os.path.isdir(args.config) else args.config
    with open(path) as f:
        cfg = M.Config(json.load(f))
    model = M.MemoeForCausalLM(cfg).float()
    M.init_random(model, args.seed, std=0.02)
    opt = optimizer_for(model, args.lr, args.weight_decay)
    counter = LoadCounter(model)
    gamma = float(cfg.raw.get("bias_update_speed", 1e-3))
    gen = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=gen)
    if args.ids:
        import numpy as np
        ids = torch.from_numpy(np.load(args.ids).astype(np.int64))
        if tuple(ids.shape) != (args.batch, args.seq):
            ap.error(f"--ids has shape {tuple(ids.shape)}, expected ({args.batch}, {args.seq})")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast):
            _, loss = model(ids)
        loss.backward()
        opt.step()
        counter.update_biases(gamma)
        return loss.item()

    step()  # warm-up: allocations, thread pools
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    elapsed = time.perf_counter() - start
    print(json.dumps({"tokens_per_s": args.batch * args.seq * args.steps / elapsed,
                      "step_s": elapsed / args.steps, "loss": loss}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (M.ConfigError, M.ModelError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
