"""Layers of the reference model: norms, RoPE/YaRN, MLA, GQA, MoE, Engram.

Module attribute names follow the checkpoint names of spec section 6.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hashing import engram_rows

FLOAT32_EPS = 2.0 ** -23     # float32 epsilon, Engram gate norms (spec 5.3)
LATENT_NORM_EPS = 1e-6       # q_a_layernorm / kv_a_layernorm, whatever rms_norm_eps says
CONV_NORM_EPS = 1e-5         # Engram short-conv norms (spec 5.4)


# ----------------------------------------------------------------------------
# Building blocks

def rms_norm(x, weight, eps):
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rope_frequencies(cfg, rot_dim):
    """Per-pair frequencies f_i (float64, YaRN applied) and the YaRN mscale."""
    theta = cfg.rope_theta
    i = torch.arange(rot_dim // 2, dtype=torch.float64)
    freqs = theta ** (-2.0 * i / rot_dim)
    if cfg.yarn is None:
        return freqs, 1.0
    y = cfg.yarn
    orig = y["original_max_position_embeddings"]

    def correction_dim(b):
        return rot_dim * math.log(orig / (2 * math.pi * b)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(y["beta_fast"])), 0)
    high = min(math.ceil(correction_dim(y["beta_slow"])), rot_dim - 1)
    if low == high:
        high += 0.001
    ramp = ((i - low) / (high - low)).clamp(0.0, 1.0)
    smooth = 1.0 - ramp
    freqs = freqs / y["factor"] * (1.0 - smooth) + freqs * smooth
    mscale = 0.1 * y["mscale_all_dim"] * math.log(y["factor"]) + 1.0
    return freqs, mscale


def apply_rope(x, freqs):
    """Rotates interleaved pairs of x [..., L, r]; angles t*f_i in float64."""
    L = x.shape[-2]
    angles = torch.arange(L, dtype=torch.float64)[:, None] * freqs[None, :]
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def causal_attention(q, k, v, scale):
    """q, k [B, H, L, dk], v [B, H, L, dv] -> [B, L, H*dv]; naive softmax."""
    L = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    future = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    out = torch.matmul(probs, v)
    B, H, _, dv = out.shape
    return out.transpose(1, 2).reshape(B, L, H * dv)


def _linear(n_in, n_out, bias=False):
    return nn.Linear(n_in, n_out, bias=bias)


class SwiGLU(nn.Module):
    def __init__(self, dim, width):
        super().__init__()
        self.gate_proj = _linear(dim, width)
        self.up_proj = _linear(dim, width)
        self.down_proj = _linear(width, dim)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# ----------------------------------------------------------------------------
# Attention (spec 3)

class MLA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, H = cfg.hidden_size, cfg.num_attention_heads
        self.H, self.nope, self.rope, self.vdim = H, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.kv_lora_rank = cfg.kv_lora_rank
        qk = self.nope + self.rope
        if cfg.q_lora_rank == 0:
            self.q_proj = _linear(d, H * qk)
        else:
            self.q_a_proj = _linear(d, cfg.q_lora_rank)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, LATENT_NORM_EPS)
            self.q_b_proj = _linear(cfg.q_lora_rank, H * qk)
        self.kv_a_proj_with_mqa = _linear(d, cfg.kv_lora_rank + self.rope)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, LATENT_NORM_EPS)
        self.kv_b_proj = _linear(cfg.kv_lora_rank, H * (self.nope + self.vdim))
        self.o_proj = _linear(H * self.vdim, d)
        self.freqs, mscale = rope_frequencies(cfg, self.rope)
        self.scale = qk ** -0.5 * mscale * mscale

    def forward(self, x):
        B, L, _ = x.shape
        H = self.H
        if hasattr(self, "q_proj"):
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, L, H, self.nope + self.rope).transpose(1, 2)          # [B, H, L, qk]
        q = torch.cat([q[..., : self.nope], apply_rope(q[..., self.nope:], self.freqs)], dim=-1)
        ckv = self.kv_a_proj_with_mqa(x)
        c, kpe = ckv[..., : self.kv_lora_rank], ckv[..., self.kv_lora_rank:]
        kpe = apply_rope(kpe, self.freqs)[:, None].expand(B, H, L, self.rope)  # shared by all heads
        kv = self.kv_b_proj(self.kv_a_layernorm(c)).view(B, L, H, self.nope + self.vdim).transpose(1, 2)
        k = torch.cat([kv[..., : self.nope], kpe], dim=-1)
        v = kv[..., self.nope:]
        return self.o_proj(causal_attention(q, k, v, self.scale))


class GQA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, H, KV, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.H, self.KV, self.hd = H, KV, hd
        self.q_proj = _linear(d, H * hd)
        self.k_proj = _linear(d, KV * hd)
        self.v_proj = _linear(d, KV * hd)
        self.o_proj = _linear(H * hd, d)
        self.freqs, mscale = rope_frequencies(cfg, hd)
        self.scale = hd ** -0.5 * mscale * mscale

    def forward(self, x):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.H, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.KV, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.KV, self.hd).transpose(1, 2)
        q, k = apply_rope(q, self.freqs), apply_rope(k, self.freqs)
        # query head h reads key/value head h // (H / KV)
        k = k.repeat_interleave(self.H // self.KV, dim=1)
        v = v.repeat_interleave(self.H // self.KV, dim=1)
        return self.o_proj(causal_attention(q, k, v, self.scale))


# ----------------------------------------------------------------------------
# DeepSeekMoE (spec 4)

def _descending(x):
    """Indices sorting the last dim high to low; equal values keep index order."""
    return torch.sort(x, dim=-1, descending=True, stable=True).indices


class MoEGate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        E = cfg.n_routed_experts
        self.weight = nn.Parameter(torch.zeros(E, cfg.hidden_size))
        # Selection-only bias, changed by the balancing rule, never by gradients.
        self.register_buffer("e_score_correction_bias", torch.zeros(E))
        self.cfg = cfg

    def select(self, sel):
        """Selection scores [T, E] -> expert order [T, E] (best first), masked
        scores and the gap at the group cut (None when no cut)."""
        cfg = self.cfg
        T, E = sel.shape
        G = cfg.n_group
        group_gap = None
        if G > 1:
            grouped = sel.view(T, G, E // G)
            top2 = min(2, E // G)
            group_score = grouped.sort(dim=-1, descending=True).values[..., :top2].sum(dim=-1)
            order = _descending(group_score)
            keep = torch.zeros(T, G, dtype=torch.bool)
            keep.scatter_(1, order[:, : cfg.topk_group], True)
            sel = sel.masked_fill(~keep.repeat_interleave(E // G, dim=1), float("-inf"))
            if cfg.topk_group < G:
                ranked = group_score.gather(1, order)
                group_gap = ranked[:, cfg.topk_group - 1] - ranked[:, cfg.topk_group]
        return _descending(sel), sel, group_gap

    def forward(self, x, trace=None):
        """x [T, d] -> expert ids [T, k], weights [T, k] (differentiable)."""
        cfg = self.cfg
        k = cfg.num_experts_per_tok
        logits = x @ self.weight.t()
        s = torch.sigmoid(logits) if cfg.scoring_func == "sigmoid" else torch.softmax(logits, dim=-1)
        order, sel, group_gap = self.select(s.detach() + self.e_score_correction_bias)
        idx = order[:, :k]
        w = s.gather(1, idx)  # weights from s, never from the biased scores
        if cfg.norm_topk_prob:
            w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        w = w * cfg.routed_scaling_factor
        if trace is not None:
            T, E = sel.shape
            ranked = sel.gather(1, order)
            expert_gap = ranked[:, k - 1] - ranked[:, k] if k < E else torch.full((T,), float("inf"))
            trace.update(idx=idx, weights=w.detach(), expert_gap=expert_gap, group_gap=group_gap,
                         no_bias_idx=self.select(s.detach())[0][:, :k])
        return idx, w


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate = MoEGate(cfg)
        self.experts = nn.ModuleList(SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size)
                                     for _ in range(cfg.n_routed_experts))
        if cfg.n_shared_experts > 0:
            self.shared_experts = SwiGLU(cfg.hidden_size, cfg.n_shared_experts * cfg.moe_intermediate_size)

    def forward(self, x, trace=None, aux=None):
        """x [B, L, d]; with seq_aux_loss_alpha > 0, appends this layer's
        sequence-wise balance loss to the list aux."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        idx, w = self.gate(x, trace)
        alpha = self.gate.cfg.seq_aux_loss_alpha
        if alpha > 0 and aux is not None:
            aux.append(alpha * self.seq_balance_loss(x, idx, shape[0], shape[1]))
        k = idx.shape[1]
        # Group the (token, slot) pairs by expert with one stable sort, then
        # one matmul per expert over its tokens.
        slots = torch.argsort(idx.reshape(-1), stable=True)
        counts = torch.bincount(idx.reshape(-1), minlength=len(self.experts)).tolist()
        tokens = slots // k
        slot_w = w.reshape(-1)[slots]
        y = torch.zeros_like(x)
        start = 0
        for expert, n in zip(self.experts, counts):
            if n:
                tok = tokens[start:start + n]
                # .to(y.dtype): under torch.autocast the expert's output is bf16.
                y.index_add_(0, tok, (expert(x.index_select(0, tok)) * slot_w[start:start + n, None]).to(y.dtype))
                start += n
        if hasattr(self, "shared_experts"):
            y = y + self.shared_experts(x)
        return y.view(shape)

    def seq_balance_loss(self, x, idx, B, L):
        """Spec 4: mean over the B sequences of sum_e f_e P_e, f_e = E/(k L) *
        #tokens of the sequence routed to e (a constant), P_e = mean over the
        sequence of s_e / sum(s)."""
        cfg = self.gate.cfg
        E, k = cfg.n_routed_experts, cfg.num_experts_per_tok
        logits = x @ self.gate.weight.t()
        s = torch.sigmoid(logits) if cfg.scoring_func == "sigmoid" else torch.softmax(logits, dim=-1)
        p = (s / s.sum(dim=-1, keepdim=True)).view(B, L, E).mean(dim=1)             # [B, E]
        counts = torch.stack([torch.bincount(i, minlength=E) for i in idx.reshape(B, L * k)])
        f = counts.to(s.dtype) * (E / (k * L))
        return (f * p).sum(dim=-1).mean()


# ----------------------------------------------------------------------------
# Engram (spec 5.3, 5.4); hc_mult = 1, so one branch h = 0.

class ShortConv(nn.Module):
    def __init__(self, dim, kernel, dilation):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim, bias=False)
        self.norms = nn.ModuleList([RMSNorm(dim, CONV_NORM_EPS)])
        self.kernel, self.dilation = kernel, dilation

    def forward(self, u):
        """u [B, L, d] -> silu(causal depthwise conv of RMSNorm(u)), dilation N."""
        n = self.norms[0](u).transpose(1, 2)                          # [B, d, L]
        n = F.pad(n, ((self.kernel - 1) * self.dilation, 0))          # zeros before t = 0
        y = F.conv1d(n, self.conv.weight, dilation=self.dilation, groups=n.shape[1])
        return F.silu(y).transpose(1, 2)


class Engram(nn.Module):
    def __init__(self, cfg, layer, multipliers, table_sizes):
        super().__init__()
        eg = cfg.engram
        d, E = cfg.hidden_size, eg["E"]
        self.N, self.K, self.D, self.pad_id, self.d = eg["N"], eg["K"], eg["D"], eg["pad_id"], d
        self.layer = layer
        self.register_buffer("hash_multipliers", torch.as_tensor(np.asarray(multipliers, dtype=np.int64)))
        self.register_buffer("table_sizes", torch.as_tensor(np.asarray(table_sizes, dtype=np.int64)))
        self.embedding = nn.Embedding(int(self.table_sizes.sum()), self.D)
        self.value_proj = _linear(E, d, bias=True)
        self.key_projs = nn.ModuleList([_linear(E, d, bias=True)])
        self.norm1 = nn.ModuleList([RMSNorm(d, FLOAT32_EPS)])
        self.norm2 = nn.ModuleList([RMSNorm(d, FLOAT32_EPS)])
        self.short_conv = ShortConv(d, eg["kernel_size"], self.N)

    def rows(self, ids, token_map):
        cids = token_map[ids]
        return engram_rows(cids, token_map[self.pad_id], self.hash_multipliers.tolist(),
                           self.table_sizes.tolist(), self.N, self.K)

    def forward(self, h, ids, token_map, trace=None):
        B, L, _ = h.shape
        rows = self.rows(ids, token_map)
        e = self.embedding.weight[rows].reshape(B, L, -1)             # concat over (n, head)
        key = self.norm1[0](self.key_projs[0](e))
        query = self.norm2[0](h)
        s = (key * query).sum(dim=-1, keepdim=True) / math.sqrt(self.d)
        alpha = torch.sigmoid(torch.sign(s) * torch.sqrt(s.abs().clamp(min=1e-6)))
        u = alpha * self.value_proj(e)
        if trace is not None:
            trace.update(rows=rows, alpha=alpha.detach()[..., 0], gate_score=s.detach()[..., 0])
        return u + self.short_conv(u)
