"""config.json parsing for the reference model (spec section 1).

A missing key takes HF DeepseekV3Config's default, or the spec's own default;
numbers that disagree are rejected with one line naming the key.
"""
import math


class ConfigError(ValueError):
    pass


# HF DeepseekV3Config defaults; None means "derived below".
_DEFAULTS = {
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61,
    "num_attention_heads": 128, "num_key_value_heads": None, "head_dim": None,
    "n_shared_experts": 1, "n_routed_experts": 256, "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "qk_nope_head_dim": 128, "n_group": 8, "topk_group": 4,
    "num_experts_per_tok": 8, "first_k_dense_replace": 3, "norm_topk_prob": None,
    "scoring_func": "sigmoid", "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 10000.0,
    "rope_scaling": None, "attention": "mla", "hc_mult": 1, "engram": None,
    "moe_layer_freq": 1, "bias_update_speed": 1e-3, "seq_aux_loss_alpha": 0.0,
}
# The example object of spec section 5 supplies the Engram defaults.
_ENGRAM_DEFAULTS = {
    "layer_ids": [1], "max_ngram_size": 3, "table_sizes": None,
    "n_embed_per_ngram": 64, "n_head_per_ngram": 4, "kernel_size": 4,
    "seed": 0, "pad_id": 0, "table_lr_mult": 5.0,
}


def _int(raw, key, lo=None, hi=None):
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"config: {key} must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"config: {key} = {v} must be >= {lo}")
    if hi is not None and v > hi:
        raise ConfigError(f"config: {key} = {v} must be <= {hi}")
    return v


def _num(raw, key):
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"config: {key} must be a finite number, got {v!r}")
    return float(v)


class Config:
    """Resolved, validated config. `raw` keeps the dict as given (for saving)."""

    def __init__(self, raw):
        if not isinstance(raw, dict):
            raise ConfigError("config: top level must be a JSON object")
        self.raw = raw
        c = dict(_DEFAULTS)
        c.update({k: v for k, v in raw.items() if k in _DEFAULTS})
        if c["q_lora_rank"] is None:  # DeepSeek configs write null for "no q LoRA"
            c["q_lora_rank"] = 0
        if c["n_routed_experts"] is None:
            c["n_routed_experts"] = 0
        if c["num_key_value_heads"] is None:
            c["num_key_value_heads"] = c["num_attention_heads"]

        self.vocab_size = _int(c, "vocab_size", 1)
        self.hidden_size = _int(c, "hidden_size", 1)
        self.num_hidden_layers = _int(c, "num_hidden_layers", 1)
        self.num_attention_heads = _int(c, "num_attention_heads", 1)
        self.rms_norm_eps = _num(c, "rms_norm_eps")
        if self.rms_norm_eps <= 0:
            raise ConfigError("config: rms_norm_eps must be > 0")
        self.rope_theta = _num(c, "rope_theta")
        if self.rope_theta <= 1:
            raise ConfigError("config: rope_theta must be > 1")
        self.max_position_embeddings = _int(c, "max_position_embeddings", 1)
        self.tie_word_embeddings = bool(c["tie_word_embeddings"])
        self.hc_mult = _int(c, "hc_mult", 1)
        if self.hc_mult != 1:
            raise ConfigError(f"config: hc_mult = {self.hc_mult} (mHC) is not supported yet; must be 1")
        if _int(c, "moe_layer_freq", 1) != 1:
            raise ConfigError("config: moe_layer_freq must be 1")

        self.attention = c["attention"]
        if self.attention not in ("mla", "gqa"):
            raise ConfigError(f"config: attention must be \"mla\" or \"gqa\", got {self.attention!r}")
        if self.attention == "mla":
            self.q_lora_rank = _int(c, "q_lora_rank", 0)
            self.kv_lora_rank = _int(c, "kv_lora_rank", 1)
            self.qk_nope_head_dim = _int(c, "qk_nope_head_dim", 0)
            self.qk_rope_head_dim = _int(c, "qk_rope_head_dim", 2)
            self.v_head_dim = _int(c, "v_head_dim", 1)
            if self.qk_rope_head_dim % 2:
                raise ConfigError("config: qk_rope_head_dim must be even (RoPE rotates pairs)")
            self.rotary_dim = self.qk_rope_head_dim
        else:
            self.num_key_value_heads = _int(c, "num_key_value_heads", 1)
            if self.num_attention_heads % self.num_key_value_heads:
                raise ConfigError("config: num_attention_heads must be a multiple of num_key_value_heads")
            if c["head_dim"] is None:
                if self.hidden_size % self.num_attention_heads:
                    raise ConfigError("config: head_dim missing and hidden_size is not a multiple of num_attention_heads")
                c["head_dim"] = self.hidden_size // self.num_attention_heads
            self.head_dim = _int(c, "head_dim", 2)
            if self.head_dim % 2:
                raise ConfigError("config: head_dim must be even (RoPE rotates pairs)")
            self.rotary_dim = self.head_dim
        self._parse_rope_scaling(c["rope_scaling"])

        self.first_k_dense_replace = _int(c, "first_k_dense_replace", 0)
        if self.first_k_dense_replace > 0:
            self.intermediate_size = _int(c, "intermediate_size", 1)
        self.n_routed_experts = _int(c, "n_routed_experts", 0)
        self.has_moe = self.first_k_dense_replace < self.num_hidden_layers and self.n_routed_experts > 0
        if not self.has_moe and self.first_k_dense_replace < self.num_hidden_layers:
            # n_routed_experts 0 / null: every layer dense, as in HF.
            self.first_k_dense_replace = self.num_hidden_layers
            self.intermediate_size = _int(c, "intermediate_size", 1)
        if self.has_moe:
            self._parse_moe(c)
        self._parse_engram(c["engram"])

    def _parse_rope_scaling(self, rs):
        self.yarn = None
        if rs is None:
            return
        if not isinstance(rs, dict):
            raise ConfigError("config: rope_scaling must be null or an object")
        kind = rs.get("type", rs.get("rope_type"))
        if kind != "yarn":
            raise ConfigError(f"config: rope_scaling.type must be \"yarn\", got {kind!r}")
        r = dict({"beta_fast": 32, "beta_slow": 1}, **rs)
        for key in ("factor", "original_max_position_embeddings", "mscale_all_dim"):
            if key not in r:
                raise ConfigError(f"config: rope_scaling.{key} is required")
        factor = _num(r, "factor")
        if factor <= 0:
            raise ConfigError("config: rope_scaling.factor must be > 0")
        mscale_all_dim = _num(r, "mscale_all_dim")
        if "mscale" in r and _num(r, "mscale") != mscale_all_dim:
            raise ConfigError("config: rope_scaling.mscale must equal rope_scaling.mscale_all_dim")
        orig = _int(r, "original_max_position_embeddings", 1)
        beta_fast, beta_slow = _num(r, "beta_fast"), _num(r, "beta_slow")
        if beta_fast <= 0 or beta_slow <= 0:
            raise ConfigError("config: rope_scaling.beta_fast and beta_slow must be > 0")
        if factor > 1:  # YaRN is on exactly when factor > 1 (spec 3)
            self.yarn = {"factor": factor, "original_max_position_embeddings": orig,
                         "beta_fast": beta_fast, "beta_slow": beta_slow,
                         "mscale_all_dim": mscale_all_dim}

    def _parse_moe(self, c):
        self.moe_intermediate_size = _int(c, "moe_intermediate_size", 1)
        self.n_shared_experts = _int(c, "n_shared_experts", 0)
        E = self.n_routed_experts
        self.num_experts_per_tok = _int(c, "num_experts_per_tok", 1, E)
        self.n_group = _int(c, "n_group", 1, E)
        if E % self.n_group:
            raise ConfigError("config: n_routed_experts must be a multiple of n_group")
        self.topk_group = _int(c, "topk_group", 1, self.n_group)
        if self.num_experts_per_tok > self.topk_group * (E // self.n_group):
            raise ConfigError("config: num_experts_per_tok exceeds the experts in topk_group groups")
        self.scoring_func = c["scoring_func"]
        if self.scoring_func not in ("sigmoid", "softmax"):
            raise ConfigError(f"config: scoring_func must be \"sigmoid\" or \"softmax\", got {self.scoring_func!r}")
        ntp = c["norm_topk_prob"]
        self.norm_topk_prob = (self.scoring_func == "sigmoid") if ntp is None else bool(ntp)
        self.routed_scaling_factor = _num(c, "routed_scaling_factor")
        self.bias_update_speed = _num(c, "bias_update_speed")
        self.seq_aux_loss_alpha = _num(c, "seq_aux_loss_alpha")
        if self.seq_aux_loss_alpha < 0:
            raise ConfigError("config: seq_aux_loss_alpha must be >= 0")

    def _parse_engram(self, eg):
        self.engram = None
        if eg is None:
            return
        if not isinstance(eg, dict):
            raise ConfigError("config: engram must be null or an object")
        e = dict(_ENGRAM_DEFAULTS)
        e.update(eg)
        ids = e["layer_ids"]
        if not isinstance(ids, list) or not ids:
            raise ConfigError("config: engram.layer_ids must be a non-empty list")
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_hidden_layers:
                raise ConfigError(f"config: engram.layer_ids entry {i!r} is not a layer index < num_hidden_layers")
        if len(set(ids)) != len(ids):
            raise ConfigError("config: engram.layer_ids has duplicates")
        N = _int(e, "max_ngram_size", 2)
        if e["table_sizes"] is None:
            e["table_sizes"] = [40960] * (N - 1)
        ts = e["table_sizes"]
        if not isinstance(ts, list) or len(ts) != N - 1:
            raise ConfigError("config: engram.table_sizes must list max_ngram_size - 1 sizes")
        for t in ts:
            if isinstance(t, bool) or not isinstance(t, int) or t < 2:
                raise ConfigError(f"config: engram.table_sizes entry {t!r} must be an integer >= 2")
        K = _int(e, "n_head_per_ngram", 1)
        emb = _int(e, "n_embed_per_ngram", 1)
        if emb % K:
            raise ConfigError("config: engram.n_embed_per_ngram must be a multiple of n_head_per_ngram")
        self.engram = {
            "layer_ids": list(ids), "N": N, "K": K, "D": emb // K, "E": (N - 1) * emb,
            "table_sizes": list(ts), "kernel_size": _int(e, "kernel_size", 1),
            "seed": _int(e, "seed", 0), "pad_id": _int(e, "pad_id", 0, self.vocab_size - 1),
            "table_lr_mult": _num(e, "table_lr_mult"),
        }

    def is_moe_layer(self, i):
        return self.has_moe and i >= self.first_k_dense_replace
