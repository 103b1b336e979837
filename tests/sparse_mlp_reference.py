"""Mixture-of-experts routing written from the Sparse-MLP spec's equations (V-MoE / GShard) with explicit loops:
every item, in queue order, takes a slot of its chosen expert while the expert has room. NumPy, float64."""

import numpy as np
from scipy.stats import norm

from reference_ops import gelu, softmax


def moe_forward(x, params, k, capacity, batch_prioritized, gate_logits=None):
    """x [B, N, D]; params: router (D, E), kernel_0 (E, D, H), bias_0, kernel_1 (E, H, D), bias_1.
    `gate_logits`: the (noisy) logits that choose the experts, default the clean x @ router."""
    logits = x @ params["router"] if gate_logits is None else gate_logits
    probs = softmax(logits)
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        choices = np.argsort(-probs[b], axis=-1, kind="stable")[:, :k]
        queue = range(x.shape[1])
        if batch_prioritized:  # highest top-1 gate first, ties in position order
            queue = sorted(queue, key=lambda n: -probs[b, n].max())
        used = np.zeros(probs.shape[-1], int)
        for j in range(k):  # every item's first choice before any second choice
            for n in queue:
                e = choices[n, j]
                if used[e] < capacity:
                    used[e] += 1
                    hidden = gelu(x[b, n] @ params["kernel_0"][e] + params["bias_0"][e])
                    out[b, n] += probs[b, n, e] * (hidden @ params["kernel_1"][e] + params["bias_1"][e])
    return out


def cv_squared(values):
    return values.var() / values.mean() ** 2


def auxiliary_loss(clean_logits, noisy_logits, k, noise_std, weight):
    """weight · (½ CV²(importance) + ½ CV²(load)); load_e = Σ P(clean logit_e + new noise >= the value expert e
    must beat to be in the top k of the noisy logits)."""
    importance = softmax(clean_logits).reshape(-1, clean_logits.shape[-1]).sum(0)
    ranked = -np.sort(-noisy_logits, axis=-1)
    in_top_k = noisy_logits >= ranked[..., k - 1:k]
    threshold = np.where(in_top_k, ranked[..., k:k + 1], ranked[..., k - 1:k])
    load = norm.sf((threshold - clean_logits) / noise_std).reshape(-1, clean_logits.shape[-1]).sum(0)
    return weight * (0.5 * cv_squared(importance) + 0.5 * cv_squared(load))
