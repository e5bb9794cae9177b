"""Engram hashing (spec 5.2): row ids from the token ids alone, no learned state."""
import numpy as np
import torch


def engram_hash_multipliers(seed, layer, n_max, vocab_compressed):
    """N odd multipliers, drawn as DeepSeek's Engram code draws them."""
    hb = max(1, ((2 ** 63 - 1) // vocab_compressed) // 2)
    draws = np.random.default_rng(seed + 10007 * layer).integers(0, hb, size=n_max, dtype=np.int64)
    return draws * 2 + 1


def _is_prime(n):
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def engram_table_primes(table_sizes, layer_ids, n_max, heads):
    """{layer: [[p for head] for n in 2..N]}: distinct primes over all layers."""
    used = set()
    out = {}
    for layer in layer_ids:
        per_n = []
        for n in range(2, n_max + 1):
            start = table_sizes[n - 2] - 1
            primes = []
            for _ in range(heads):
                p = start + 1
                while p in used or not _is_prime(p):
                    p += 1
                used.add(p)
                primes.append(p)
                start = p
            per_n.append(primes)
        out[layer] = per_n
    return out


def engram_rows(cids, pad_cid, multipliers, table_sizes, n_max, heads):
    """Row ids [B, L, (N-1)*K] (offsets included) for compressed ids [B, L]."""
    cids = torch.as_tensor(cids, dtype=torch.int64)
    B, L = cids.shape
    # window[k][:, t] = c_{t-k}, the compressed pad before the sequence start
    window = [cids]
    for k in range(1, n_max):
        pad = torch.full((B, min(k, L)), int(pad_cid), dtype=torch.int64)
        window.append(torch.cat([pad, cids[:, : L - k]], dim=1)[:, :L])
    sizes = [int(p) for p in table_sizes]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    rows = []
    table = 0
    for n in range(2, n_max + 1):
        mix = torch.zeros_like(cids)
        for k in range(n):
            mix = torch.bitwise_xor(mix, window[k] * int(multipliers[k]))
        for _ in range(heads):
            rows.append(offsets[table] + torch.remainder(mix, sizes[table]))
            table += 1
    return torch.stack(rows, dim=-1)
