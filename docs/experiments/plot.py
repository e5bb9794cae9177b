#!/usr/bin/python3
"""Figures and tables of docs/experiments/engram-vs-moe.md from the results
that scripts/experiment-engram.sh records (docs/experiments/results/*.json).

  /usr/bin/python3 docs/experiments/plot.py

Writes docs/experiments/figures/{niah-main.png, sparsity-sweep.png} and
prints the Markdown tables (mean and spread across seeds) for the report."""
import glob
import json
import math
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(here, "results", "*.json")))]
os.makedirs(os.path.join(here, "figures"), exist_ok=True)


def val_loss(run):
    m = re.search(r"loss ([0-9.]+) nats/token", run["eval"])
    return float(m.group(1)) if m else math.nan


def model_of(run):
    return re.sub(r"-s[0-9]+$", "", run["name"])


def spread(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f} (1 seed)"
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.3f} ± {sd:.3f} ({len(values)} seeds, {min(values):.3f}–{max(values):.3f})"


by_model = {}
for r in runs:
    by_model.setdefault(model_of(r), []).append(r)

tasks = ["single", "multikey", "multivalue", "multiquery"]
print("| model | total | active | tokens trained | held-out loss | " + " | ".join(f"NIAH {t}" for t in tasks) + " |")
print("|---|---|---|---|---|" + "---|" * len(tasks))
for model, rs in sorted(by_model.items()):
    p = rs[0]["params"]
    tokens = sorted(r["last_step"]["tokens"] for r in rs)
    cells = [spread([r["niah"]["tasks"][t]["accuracy"] for r in rs if t in r["niah"]["tasks"]]) for t in tasks]
    print(f"| {model} | {p['total_params'] / 1e6:.2f} M | {p['active_params'] / 1e6:.3f} M | "
          f"{tokens[0]:,}–{tokens[-1]:,} | {spread([val_loss(r) for r in rs])} | " + " | ".join(cells) + " |")

# NIAH heatmaps, mean over seeds: one row of tasks per main model.
main = [m for m in ("moe-e32", "engram-e20") if m in by_model]
if main:
    fig, axes = plt.subplots(len(main), len(tasks), figsize=(4 * len(tasks), 3.2 * len(main)), squeeze=False)
    for i, model in enumerate(main):
        rs = by_model[model]
        for j, task in enumerate(tasks):
            cells = {}
            for r in rs:
                for c in r["niah"]["tasks"].get(task, {}).get("cells", []):
                    cells.setdefault((c["depth"], c["length"]), []).append(c["accuracy"])
            depths = sorted({d for d, _ in cells})
            lengths = sorted({l for _, l in cells})
            grid = np.array([[np.mean(cells.get((d, l), [np.nan])) for l in lengths] for d in depths])
            ax = axes[i][j]
            ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(lengths)), [str(l) for l in lengths])
            ax.set_yticks(range(len(depths)), [f"{d}%" for d in depths])
            for y in range(len(depths)):
                for x in range(len(lengths)):
                    ax.text(x, y, f"{grid[y, x]:.2f}", ha="center", va="center",
                            color="white" if grid[y, x] < 0.5 else "black", fontsize=8)
            ax.set_title(f"{model} ({len(rs)} seeds): {task}", fontsize=9)
            ax.set_xlabel("context length (tokens)")
            ax.set_ylabel("needle depth")
    fig.tight_layout()
    fig.savefig(os.path.join(here, "figures", "niah-main.png"), dpi=110)

# Held-out loss against the share of sparse parameters in Engram tables.
points = []
ranges = []  # (share, lowest, highest, seeds) where several seeds ran
for model, rs in by_model.items():
    p = rs[0]["params"]
    m = re.match(r"(moe|engram)-e([0-9]+)", model)
    if not m:
        continue
    experts = int(m.group(2))
    tables = p.get("engram_table_params", 0)
    # Routed-expert parameters: 5 MoE layers of 3 x 256 x 128 per expert, plus its router row.
    expert_params = experts * 5 * (3 * 256 * 128 + 256)
    share = tables / (tables + expert_params)
    losses = [val_loss(r) for r in rs if r["seed"] == 0]
    if losses:
        points.append((share, losses[0], model))
        every_seed = [val_loss(r) for r in rs]
        if len(every_seed) > 1:
            ranges.append((share, min(every_seed), max(every_seed), len(every_seed)))
if len(points) >= 2:
    points.sort()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([100 * s for s, _, _ in points], [l for _, l, _ in points], "o-", label="seed 0")
    for i, (s, lo, hi, n) in enumerate(ranges):
        ax.vlines(100 * s, lo, hi, color="gray", linewidth=4, alpha=0.5,
                  label=f"range over seeds ({n})" if i == 0 else None)
    ax.legend(fontsize=8)
    for s, l, name in points:
        ax.annotate(name, (100 * s, l), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("share of sparse parameters in Engram tables (%)")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("Sparsity allocation at fixed total and active parameters")
    fig.tight_layout()
    fig.savefig(os.path.join(here, "figures", "sparsity-sweep.png"), dpi=110)
    print("\n| share in tables | model | held-out loss (seed 0) |\n|---|---|---|")
    for s, l, name in points:
        print(f"| {100 * s:.1f} % | {name} | {l:.4f} |")
