"""Self-check of the reference: the spec's hashing test vectors plus model
invariants (causality, save/load round trip, routing ties, finite differences,
config rejection). Run through `/usr/bin/python3 reference/model.py --selftest`."""
import copy
import tempfile

import numpy as np
import torch

import model as M
from hashing import engram_hash_multipliers, engram_rows, engram_table_primes

# Spec 5.2 test vectors (seed 0, numpy 1.24).
MULTIPLIERS = [
    (1000, 3, 1, [7593627661414631, 479593001838623, 3563315849468963]),
    (1000, 3, 15, [2865651367968763, 5551170510236881, 5343936160617101]),
    (99092, 4, 1, [76632096046245, 4839876093313, 35959672319349, 73987337458391]),
    (99092, 4, 14, [67716810739261, 51510806800915, 30921347202721, 82619226485591]),
]
PRIMES = {1: [[1009, 1013], [1019, 1021]], 15: [[1031, 1033], [1039, 1049]]}
ROWS = [[521, 1866, 2829, 3422], [977, 1270, 2222, 3063], [165, 1878, 2194, 3582],
        [404, 1152, 2029, 3758], [315, 1929, 2739, 3781], [744, 1522, 2563, 3138]]

TINY = {
    "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3, "intermediate_size": 24,
    "first_k_dense_replace": 1, "moe_intermediate_size": 8, "n_routed_experts": 4,
    "num_experts_per_tok": 2, "n_shared_experts": 1, "n_group": 2, "topk_group": 1,
    "routed_scaling_factor": 1.5, "num_attention_heads": 2, "q_lora_rank": 8, "kv_lora_rank": 8,
    "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "rope_theta": 1000.0,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                     "mscale_all_dim": 1.0},
    "engram": {"layer_ids": [1], "max_ngram_size": 3, "table_sizes": [23, 29],
               "n_embed_per_ngram": 8, "n_head_per_ngram": 2, "kernel_size": 3, "pad_id": 2},
}


def _check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok  {what}")


def _tiny_model(raw=TINY, seed=1):
    token_map = np.arange(raw["vocab_size"]) % 27  # several ids share a compressed id
    model = M.MemoeForCausalLM(M.Config(copy.deepcopy(raw)), token_map).double()
    M.init_random(model, seed, std=0.3, zero_short_conv=False)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, t in model.named_float_tensors().items():
            if t.dim() == 1:  # make norms, biases and the routing bias non-trivial
                t.add_(0.1 * torch.randn(t.shape, generator=gen, dtype=t.dtype))
    return model


def check_hashing():
    for vocab, n, layer, want in MULTIPLIERS:
        got = engram_hash_multipliers(0, layer, n, vocab).tolist()
        _check(got == want, f"hash multipliers V'={vocab} N={n} l={layer}")
    primes = engram_table_primes([1000, 1000], [1, 15], 3, 2)
    _check(primes == PRIMES, "table primes for layer_ids [1, 15]")
    sizes = [p for per_n in primes[1] for p in per_n]
    rows = engram_rows(torch.tensor([[5, 17, 17, 999, 0, 42]]), 0, MULTIPLIERS[0][3], sizes, 3, 2)
    _check(rows[0].tolist() == ROWS, "engram rows of the spec example")


def check_routing_ties():
    raw = dict(TINY, n_group=1, topk_group=1, scoring_func="softmax")
    gate = M.MemoeForCausalLM(M.Config(raw)).model.layers[1].mlp.gate
    order, _, _ = gate.select(torch.tensor([[0.2, 0.5, 0.5, 0.5]]))
    _check(order[0, :2].tolist() == [1, 2], "equal selection scores: the lower expert index wins")
    gate = M.MemoeForCausalLM(M.Config(TINY)).model.layers[1].mlp.gate  # 2 groups of 2
    order, _, _ = gate.select(torch.tensor([[0.9, 0.0, 0.5, 0.45]]))
    _check(order[0, :2].tolist() == [2, 3], "groups are ranked by the sum of their top-2 scores")


def check_model():
    model = _tiny_model()
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(3))
    trace = {}
    logits, loss = model(ids, trace=trace)
    _check(torch.isfinite(loss).item() and logits.shape == (2, 12, 40), "forward gives finite loss and [B, L, V] logits")
    _check(set(trace) == {1, 2} and "engram" in trace[1] and "moe" in trace[2], "trace has Engram and MoE records")
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 40
    logits2, _ = model(changed)
    _check(torch.equal(logits[:, :7], logits2[:, :7]) and not torch.allclose(logits[:, 7:], logits2[:, 7:]),
           "causal: changing token 7 changes logits from 7 on only")
    with tempfile.TemporaryDirectory() as tmp:
        M.save_model(model, tmp)
        loaded = M.load_model(tmp, torch.float64)
        logits3, _ = loaded(ids)
        weights = {n: t.float().double() if t.is_floating_point() else t for n, t in model.state_dict().items()}
        model.load_state_dict(weights)  # the file holds float32 values
        logits4, _ = model(ids)
        _check(torch.allclose(logits3, logits4, atol=0, rtol=1e-12), "save/load round trip reproduces the logits")
        f32 = M.load_model(tmp, torch.float32)
        logits5, _ = f32(ids)
        _check((logits5.double() - logits4).abs().max().item() < 1e-3, "float32 run agrees with float64 to 1e-3")

    # Finite differences on a few coordinates of every kind of weight.
    model.zero_grad()
    _, loss = model(ids)
    loss.backward()
    grads = model.gradients()
    gen = torch.Generator().manual_seed(5)
    for name in ["model.layers.1.engram.embedding.weight", "model.layers.1.engram.key_projs.0.weight",
                 "model.layers.1.engram.short_conv.conv.weight", "model.layers.2.mlp.gate.weight",
                 "model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.kv_b_proj.weight",
                 "model.layers.2.mlp.experts.1.up_proj.weight", "model.norm.weight"]:
        t = dict(model.named_parameters())[name]
        flat = t.detach().view(-1)
        touched = (grads[name].view(-1) != 0).nonzero().view(-1)
        for j in touched[torch.randint(0, len(touched), (2,), generator=gen)].tolist():
            step = 1e-6
            with torch.no_grad():
                flat[j] += step
                up = model(ids)[1].item()
                flat[j] -= 2 * step
                down = model(ids)[1].item()
                flat[j] += step
            numeric = (up - down) / (2 * step)
            analytic = grads[name].view(-1)[j].item()
            _check(abs(numeric - analytic) <= 1e-6 + 1e-5 * abs(analytic),
                   f"finite difference of {name}[{j}]: {numeric:.8f} vs {analytic:.8f}")
    _check(grads["model.layers.2.mlp.gate.e_score_correction_bias"].abs().sum() == 0,
           "the correction bias gets no gradient")


def check_balance_loss():
    """The sequence-wise balance loss (spec 4) against a loop over sequences,
    experts and tokens, and its gradient against finite differences."""
    raw = dict(TINY, seq_aux_loss_alpha=0.3)
    model = _tiny_model(raw)
    plain = _tiny_model(TINY)
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(4))
    trace = {}
    _, loss = model(ids, trace=trace)
    _, ce = plain(ids)
    cfg = model.cfg
    E, k, (B, L) = cfg.n_routed_experts, cfg.num_experts_per_tok, ids.shape
    want = 0.0
    for layer in (1, 2):  # both MoE layers
        lay = model.model.layers[layer]
        with torch.no_grad():
            x = lay.post_attention_layernorm(_residual_before_ffn(model, ids, layer)).reshape(-1, cfg.hidden_size)
            s = torch.sigmoid(x @ lay.mlp.gate.weight.t())
        idx = trace[layer]["moe"]["idx"]
        for b in range(B):
            for e in range(E):
                f = E / (k * L) * sum(int(e in idx[b * L + t].tolist()) for t in range(L))
                p = sum(float(s[b * L + t, e] / s[b * L + t].sum()) for t in range(L)) / L
                want += f * p / B
    _check(abs((loss - ce).item() - 0.3 * want) < 1e-12,
           f"balance loss {(loss - ce).item():.6f} = alpha * sum f P ({0.3 * want:.6f})")
    model.zero_grad()
    loss.backward()
    w = model.model.layers[2].mlp.gate.weight
    analytic = w.grad.view(-1)[5].item()
    with torch.no_grad():
        w.view(-1)[5] += 1e-6
        up = model(ids)[1].item()
        w.view(-1)[5] -= 2e-6
        down = model(ids)[1].item()
        w.view(-1)[5] += 1e-6
    numeric = (up - down) / 2e-6
    _check(abs(numeric - analytic) <= 1e-6 + 1e-5 * abs(analytic),
           f"finite difference of the gate weight with the balance loss: {numeric:.8f} vs {analytic:.8f}")


def _residual_before_ffn(model, ids, layer):
    """The residual stream entering layer `layer`'s FFN block."""
    token_map = model.model.engram_token_map
    h = model.model.embed_tokens(ids)
    for i, lay in enumerate(model.model.layers):
        if i == layer:
            if hasattr(lay, "engram"):
                h = h + lay.engram(h, ids, token_map)
            return h + lay.self_attn(lay.input_layernorm(h))
        h = lay(h, ids, token_map)
    raise ValueError(layer)


def check_config_rejection():
    bad = [({"hc_mult": 2}, "hc_mult"), ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
           ({"n_group": 3}, "n_group"), ({"attention": "mha"}, "attention"),
           ({"engram": dict(TINY["engram"], layer_ids=[3])}, "layer_ids"),
           ({"engram": dict(TINY["engram"], table_sizes=[23])}, "table_sizes"),
           ({"rope_scaling": dict(TINY["rope_scaling"], mscale=0.5)}, "mscale"),
           ({"attention": "gqa", "num_key_value_heads": 3}, "num_key_value_heads"),
           ({"seq_aux_loss_alpha": -0.1}, "seq_aux_loss_alpha")]
    for change, key in bad:
        try:
            M.Config(dict(TINY, **change))
        except M.ConfigError as e:
            _check(key in str(e), f"config rejects {change}: {e}")
        else:
            raise AssertionError(f"config accepted {change}")
    _check(M.Config(dict(TINY, scoring_func="softmax")).norm_topk_prob is False
           and M.Config(TINY).norm_topk_prob is True, "norm_topk_prob defaults by scoring_func")


def run():
    torch.manual_seed(0)
    check_hashing()
    check_routing_ties()
    check_model()
    check_balance_loss()
    check_config_rejection()
    print("selftest passed")
    return 0
