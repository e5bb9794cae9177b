#!/usr/bin/python3
"""Runs DeepSeek's own released V4 inference code on a memoe V4 checkpoint, in fp32.

DeepSeek's `inference/model.py` (V4-Flash's Hugging Face repo) is the outside
implementation memoe's V4 is checked against. It is not part of memoe and is
not copied here: pass the directory holding it. Its `kernel.py` needs
tilelang and a GPU, so this script puts in its place a module of plain torch
functions written from the math (deepseek-v4.md §1.2, §2.2): the attention
over index lists with the sink, and Sinkhorn in DeepSeek's order; the FP8 and
FP4 simulations of the keys and activations become the identity, which is
what "its bf16 casts lifted, its math unchanged" asks for. The model is
built with bf16 weights as DeepSeek builds it, then every float tensor is
made fp32 and loaded from memoe's model.safetensors under the same names.

    /usr/bin/python3 reference/deepseek_v4_check.py --deepseek DIR --model MEMOE_DIR \
        --ids 1,2,3 --out logits.npy [--greedy N]

Writes the logits of every position ([L, V], float32). With --greedy N it
also prints DeepSeek's greedy continuation of N tokens (full forward per
token: its decode path is not the object of the check).
"""
import argparse
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def plain_kernel_module():
    k = types.ModuleType("kernel")

    def act_quant(x, block_size=128, scale_fmt=None, scale_dtype=None, inplace=False):
        # The QAT simulation rounds in place: lifted (nothing to round in fp32).
        if inplace:
            return x
        raise RuntimeError("an FP8 product was asked for: the checkpoint must be fp32 here")

    def fp4_act_quant(x, block_size=32, inplace=False):
        if inplace:
            return x
        raise RuntimeError("an FP4 product was asked for: the checkpoint must be fp32 here")

    def unsupported(*args, **kwargs):
        raise RuntimeError("low-precision products are not part of this check")

    def sparse_attn(q, kv, attn_sink, topk_idxs, softmax_scale):
        # q [b, s, h, d], kv [b, n, d], topk_idxs [b, s, k] (-1: none).
        b, s, h, d = q.shape
        idx = topk_idxs.long()
        valid = idx >= 0
        gathered = torch.gather(kv.unsqueeze(1).expand(b, s, kv.shape[1], d), 2,
                                idx.clamp(min=0).unsqueeze(-1).expand(b, s, idx.shape[-1], d))
        scores = torch.einsum("bshd,bskd->bshk", q.float(), gathered.float()) * softmax_scale
        scores = scores.masked_fill(~valid.unsqueeze(2), float("-inf"))
        sink = attn_sink.float().view(1, 1, h, 1).expand(b, s, h, 1)
        logits = torch.cat([scores, sink], dim=-1)
        p = torch.softmax(logits, dim=-1)[..., :-1]
        return torch.einsum("bshk,bskd->bshd", p, gathered.float()).to(q.dtype)

    def hc_split_sinkhorn(mixes, hc_scale, hc_base, hc_mult=4, sinkhorn_iters=20, eps=1e-6):
        n = hc_mult
        pre = torch.sigmoid(mixes[..., :n] * hc_scale[0] + hc_base[:n]) + eps
        post = 2 * torch.sigmoid(mixes[..., n:2 * n] * hc_scale[1] + hc_base[n:2 * n])
        comb = (mixes[..., 2 * n:] * hc_scale[2] + hc_base[2 * n:]).unflatten(-1, (n, n))
        comb = comb.softmax(-1) + eps
        comb = comb / (comb.sum(-2, keepdim=True) + eps)
        for _ in range(sinkhorn_iters - 1):
            comb = comb / (comb.sum(-1, keepdim=True) + eps)
            comb = comb / (comb.sum(-2, keepdim=True) + eps)
        return pre, post, comb

    k.act_quant, k.fp4_act_quant, k.sparse_attn, k.hc_split_sinkhorn = act_quant, fp4_act_quant, sparse_attn, \
        hc_split_sinkhorn
    k.fp8_gemm = k.fp4_gemm = unsupported
    return k


def model_args(config):
    """memoe's (Hugging Face spelling) config.json -> DeepSeek's ModelArgs fields."""
    c = config
    ratios = c["compress_ratios"]
    args = dict(vocab_size=c["vocab_size"], dim=c["hidden_size"], moe_inter_dim=c["moe_intermediate_size"],
                n_layers=c["num_hidden_layers"], n_hash_layers=c["num_hash_layers"], n_mtp_layers=0,
                n_heads=c["num_attention_heads"], n_routed_experts=c["n_routed_experts"],
                n_shared_experts=c["n_shared_experts"], n_activated_experts=c["num_experts_per_tok"],
                score_func=c["scoring_func"], route_scale=c["routed_scaling_factor"], swiglu_limit=c["swiglu_limit"],
                q_lora_rank=c["q_lora_rank"], head_dim=c["head_dim"], rope_head_dim=c["qk_rope_head_dim"],
                norm_eps=c["rms_norm_eps"], o_groups=c["o_groups"], o_lora_rank=c["o_lora_rank"],
                window_size=c["sliding_window"], compress_ratios=tuple(ratios[:c["num_hidden_layers"]]),
                compress_rope_theta=c["compress_rope_theta"], rope_theta=c["rope_theta"],
                index_n_heads=c["index_n_heads"], index_head_dim=c["index_head_dim"], index_topk=c["index_topk"],
                hc_mult=c["hc_mult"], hc_sinkhorn_iters=c["hc_sinkhorn_iters"], hc_eps=c["hc_eps"],
                dtype="bf16", scale_fmt=None, expert_dtype=None, max_batch_size=1, max_seq_len=256)
    return args


def load_deepseek(directory):
    # Dtypes newer than this torch: only compared against, never made.
    for name in ("float8_e4m3fn", "float4_e2m1fn_x2", "float8_e8m0fnu"):
        if not hasattr(torch, name):
            setattr(torch, name, object())
    sys.modules["kernel"] = plain_kernel_module()
    spec = importlib.util.spec_from_file_location("deepseek_v4_model", os.path.join(directory, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deepseek", required=True, help="directory with DeepSeek's inference/model.py")
    ap.add_argument("--model", required=True, help="memoe V4 model directory")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--greedy", type=int, default=0)
    a = ap.parse_args()

    ds = load_deepseek(a.deepseek)
    with open(os.path.join(a.model, "config.json")) as f:
        config = json.load(f)
    if config.get("num_nextn_predict_layers", 0) > 0:
        print("note: the MTP block is not part of the check (memoe does not build it yet)")
    args = ds.ModelArgs(**model_args(config))
    torch.set_default_dtype(torch.float32)
    model = ds.Transformer(args)
    model = model.float()
    # DeepSeek's current revision clamps the shared expert too (memoe follows it).
    for layer in model.layers:
        layer.ffn.shared_experts.swiglu_limit = args.swiglu_limit
    # Every position's logits, not only the last one's.
    ds.ParallelHead.get_logits = lambda self, x: F.linear(x.float(), self.weight)

    weights = safetensors_io.load(os.path.join(a.model, "model.safetensors"))
    state = model.state_dict()
    missing = [n for n in state if n not in weights]
    extra = [n for n in weights if n not in state]
    if missing or extra:
        sys.exit(f"names differ: missing {missing[:5]}, extra {extra[:5]}")
    for name, t in state.items():
        w = torch.from_numpy(np.ascontiguousarray(weights[name]))
        if tuple(w.shape) != tuple(t.shape):
            sys.exit(f"{name}: shape {tuple(w.shape)} against DeepSeek's {tuple(t.shape)}")
        t.copy_(w.to(t.dtype))
    # Older torch (Debian's) gathers with int64 indices only; same values.
    for module in model.modules():
        if getattr(module, "tid2eid", None) is not None:
            module.tid2eid = torch.nn.Parameter(module.tid2eid.long(), requires_grad=False)

    ids = [int(v) for v in a.ids.split(",")]
    with torch.inference_mode():
        logits = model(torch.tensor([ids]), 0)
        np.save(a.out, logits[0].float().numpy())
        if a.greedy:
            seq = list(ids)
            for _ in range(a.greedy):
                seq.append(int(model(torch.tensor([seq]), 0)[0, -1].argmax()))
            print("greedy:", ",".join(str(v) for v in seq[len(ids):]))


if __name__ == "__main__":
    main()
