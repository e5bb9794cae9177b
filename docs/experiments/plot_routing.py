#!/usr/bin/python3
"""Figures and tables of docs/experiments/routing.md from what
`bash scripts/experiment-engram.sh routing` writes under
docs/experiments/results/routing/ (memoe analyze routing's routing.json,
memoe eval --labelled's per-domain lines).

  /usr/bin/python3 docs/experiments/plot_routing.py

Writes docs/experiments/figures/routing-{specialisation,consistency,domain-loss}.png
and prints the Markdown tables."""
import json
import math
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
res = os.path.join(here, "results", "routing")
fig_dir = os.path.join(here, "figures")
arms = ["moe-e32", "engram-e20"]
TOP_K = 2  # the experiment's configs route each token to 2 experts


def load(name):
    with open(os.path.join(res, name, "routing.json")) as f:
        return json.load(f)


def specialisation(usage):
    """1 - H(p_e)/log D per expert, p_e the expert's usage over domains, normalised (as eval/routing.cc)."""
    u = np.asarray(usage)  # [D, E]
    p = u / np.maximum(u.sum(axis=0, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)
    return 1 - h / math.log(u.shape[0])


def noise_floor(layer, tokens, rng, draws=20):
    """Mean specialisation of a router blind to the domain, with this layer's
    overall expert loads and the same slots per domain: what sampling alone shows."""
    u = np.asarray(layer["usage"])
    load = (u * np.asarray(tokens)[:, None]).sum(axis=0)
    load = load / load.sum()
    out = []
    for _ in range(draws):
        counts = np.stack([rng.multinomial(TOP_K * t, load) for t in tokens]).astype(float)
        out.append(specialisation(counts / counts.sum(axis=1, keepdims=True)).mean())
    return float(np.mean(out))


rng = np.random.default_rng(0)
seeds = {arm: load(f"{arm}-seeds") for arm in arms if os.path.exists(os.path.join(res, f"{arm}-seeds"))}
steps = {arm: load(f"{arm}-s0-steps") for arm in arms if os.path.exists(os.path.join(res, f"{arm}-s0-steps"))}

# Load balance and specialisation by layer, mean over seeds.
print("| model | MoE layer | load max/mean | load CV | specialisation | noise floor | matched corr. (seeds) | "
      "shuffled-domain null | same index |")
print("|---|---|---|---|---|---|---|---|---|")
summary = {}
for arm, j in seeds.items():
    layers = [l["layer"] for l in j["models"][0]["layers"]]
    rows = []
    for li, layer in enumerate(layers):
        per_model = [m["layers"][li] for m in j["models"]]
        floor = np.mean([noise_floor(l, j["tokens"], rng) for l in per_model])
        cons = [c["layers"][li] for c in j["consistency"]]
        row = dict(layer=layer,
                   maxmean=[l["load_max_over_mean"] for l in per_model],
                   cv=[l["load_cv"] for l in per_model],
                   spec=[l["mean_specialisation"] for l in per_model],
                   floor=floor,
                   matched=[c["matched_correlation"] for c in cons],
                   null=[c["null_correlation"] for c in cons],
                   same=[c["identity_correlation"] for c in cons])
        rows.append(row)
        print(f"| {arm} | {layer} | {np.mean(row['maxmean']):.2f} | {np.mean(row['cv']):.3f} | "
              f"{np.mean(row['spec']):.4f} | {floor:.4f} | {np.mean(row['matched']):.3f} | "
              f"{np.mean(row['null']):.3f} | {np.mean(row['same']):.3f} |")
    summary[arm] = rows

# The most specialised experts: which domain they favour, and how much.
print("\n| model (seed 0) | layer | expert | specialisation | most over fair share | least |")
print("|---|---|---|---|---|---|")
for arm, j in seeds.items():
    m = j["models"][0]
    best = []
    for l in m["layers"]:
        for e, s in enumerate(l["specialisation"]):
            best.append((s, l["layer"], e, l["usage"]))
    best.sort(reverse=True)
    for s, layer, e, usage in best[:3]:
        u = np.asarray(usage)
        rel = u[:, e] / u[:, e].mean()  # the expert's share in each domain over its mean share
        hi, lo = int(np.argmax(rel)), int(np.argmin(rel))
        print(f"| {arm} | {layer} | {e} | {s:.4f} | {j['domains'][hi]} ×{rel[hi]:.2f} | "
              f"{j['domains'][lo]} ×{rel[lo]:.2f} |")

if summary:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, rows in summary.items():
        x = [r["layer"] for r in rows]
        spec = np.array([r["spec"] for r in rows])
        line, = axes[0].plot(x, spec.mean(axis=1), "o-", label=f"{arm} ({spec.shape[1]} seeds)")
        axes[0].fill_between(x, spec.min(axis=1), spec.max(axis=1), color=line.get_color(), alpha=0.2)
        axes[0].plot(x, [r["floor"] for r in rows], "--", color=line.get_color(), label=f"{arm}: domain-blind router")
        mm = np.array([r["maxmean"] for r in rows])
        axes[1].plot(x, mm.mean(axis=1), "o-", color=line.get_color(), label=arm)
        axes[1].fill_between(x, mm.min(axis=1), mm.max(axis=1), color=line.get_color(), alpha=0.2)
    axes[0].set_title("Expert specialisation by domain (0: used alike by all 15 genres)", fontsize=9)
    axes[0].set_xlabel("MoE layer")
    axes[0].set_ylabel("mean specialisation")
    axes[0].legend(fontsize=7)
    axes[1].set_title("Load balance over all domains (1: balanced)", fontsize=9)
    axes[1].set_xlabel("MoE layer")
    axes[1].set_ylabel("busiest expert's load / mean")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(fig_dir, "routing-specialisation.png"), dpi=110)

# Consistency: across seeds (matched) and across the checkpoints of seed 0.
if summary or steps:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, rows in summary.items():
        x = [r["layer"] for r in rows]
        line, = axes[0].plot(x, [np.mean(r["matched"]) for r in rows], "o-", label=f"{arm}: matched")
        axes[0].plot(x, [np.mean(r["null"]) for r in rows], "--", color=line.get_color(),
                     label=f"{arm}: shuffled domains")
        axes[0].plot(x, [np.mean(r["same"]) for r in rows], ":", color=line.get_color(), label=f"{arm}: same index")
    axes[0].set_title("Seeds 1, 2 against seed 0: experts' domain profiles", fontsize=9)
    axes[0].set_xlabel("MoE layer")
    axes[0].set_ylabel("mean Pearson correlation")
    axes[0].set_ylim(-0.3, 1.0)
    axes[0].legend(fontsize=7)
    print("\n| model (seed 0) | step vs the last (128) | " + " | ".join(f"layer {l}" for l in range(1, 6)) + " |")
    print("|---|---|" + "---|" * 5)
    for arm, j in steps.items():
        names = [os.path.basename(m["model"]) for m in j["models"]]
        step_of = [int(re.sub(r"\D", "", n)) for n in names]
        for c in j["consistency"]:
            s = step_of[c["b"]]
            same = [l["identity_correlation"] for l in c["layers"]]
            print(f"| {arm} | {s} | " + " | ".join(f"{v:.3f}" for v in same) + " |")
        order = sorted(range(1, len(names)), key=lambda b: step_of[b])
        mean_same = [np.mean([l["identity_correlation"] for l in j["consistency"][b - 1]["layers"]]) for b in order]
        axes[1].plot([step_of[b] for b in order] + [step_of[0]], mean_same + [1.0], "o-", label=arm)
    axes[1].set_title("Seed 0's checkpoints against its last: same expert's profile", fontsize=9)
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("mean correlation over layers")
    axes[1].set_ylim(-0.3, 1.05)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(fig_dir, "routing-consistency.png"), dpi=110)

def domain_lines(suffix):
    """{arm: {domain: [(loss, tokens, documents), one per seed]}} from memoe eval --labelled's lines."""
    out = {}
    for arm in arms:
        for s in range(3):
            path = os.path.join(res, f"{arm}-s{s}.{suffix}.txt")
            if not os.path.exists(path):
                continue
            for line in open(path):
                m = re.match(r"domain (.+): (\d+) tokens, loss ([0-9.]+)(?:.*, (\d+) documents)?", line)
                if m:
                    out.setdefault(arm, {}).setdefault(m.group(1), []).append(
                        (float(m.group(3)), int(m.group(2)), int(m.group(4) or 0)))
    return out


# Per-domain loss: Engram + MoE against MoE alone, per seed.
losses = {arm: {d: [x[0] for x in v] for d, v in by_domain.items()} for arm, by_domain in domain_lines("domains").items()}
if len(losses) == 2:
    domains = sorted(losses[arms[0]])
    print("\n| genre | MoE alone | Engram + MoE | difference |")
    print("|---|---|---|---|")
    diffs = []
    for d in domains:
        a, b = np.mean(losses[arms[0]][d]), np.mean(losses[arms[1]][d])
        diffs.append((b - a, d, [y - x for x, y in zip(losses[arms[0]][d], losses[arms[1]][d])]))
        print(f"| {d} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    diffs.sort()
    ax.barh([d for _, d, _ in diffs], [v for v, _, _ in diffs], color="tab:green")
    for i, (_, _, per_seed) in enumerate(diffs):
        ax.plot(per_seed, [i] * len(per_seed), "k.", markersize=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("loss of Engram + MoE minus MoE alone (nats/token; bars: mean, dots: seed pairs)")
    ax.set_title("Per-genre loss, Brown corpus (16,384 tokens a genre)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(fig_dir, "routing-domain-loss.png"), dpi=110)

# The same on the documents memoe prepare held out from training (--held-out-of).
held = domain_lines("held-out")
if len(held) == 2:
    print("\n| genre (held out) | documents | tokens | MoE alone | Engram + MoE | difference | seeds where Engram is lower |")
    print("|---|---|---|---|---|---|---|")
    total = {arm: [0.0, 0] for arm in arms}
    for d in sorted(held[arms[0]]):
        a, b = held[arms[0]][d], held[arms[1]][d]
        la, lb = np.mean([x[0] for x in a]), np.mean([x[0] for x in b])
        wins = sum(y[0] < x[0] for x, y in zip(a, b))
        print(f"| {d} | {a[0][2]} | {a[0][1]:,} | {la:.3f} | {lb:.3f} | {lb - la:+.3f} | {wins} of {len(a)} |")
        for arm, v in ((arms[0], la), (arms[1], lb)):
            total[arm][0] += v * a[0][1]
            total[arm][1] += a[0][1]
    ta, tb = (total[arm][0] / total[arm][1] for arm in arms)
    print(f"| all held-out documents | | {total[arms[0]][1]:,} | {ta:.3f} | {tb:.3f} | {tb - ta:+.3f} | |")
