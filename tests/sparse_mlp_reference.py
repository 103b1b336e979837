"""Mixture-of-experts routing written from the Sparse-MLP spec's equations (V-MoE / GShard) with explicit loops:
every item, in queue order, takes a slot of its chosen expert while the expert has room. NumPy, float64."""

import numpy as np
from scipy.stats import norm

from mixer_reference import layer_norm, mixer_forward
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


def expert_capacity(k, items, experts, factor=2.0, minimum=4):
    """Slots per expert at evaluation (the spec's ColossalAI defaults: factor 2.0, at least 4), never more than
    every item once."""
    return min(max(minimum, int(np.ceil(k * factor * items / experts))), items)


def sparse_mlp_forward(params, images, patch, dense_blocks, sparse_blocks, token_k=1, channel_k=2, eps=1e-6):
    """A whole Sparse-MLP (spec sections 1-3: a Mixer whose last blocks are Sparse blocks) from the equations, on
    parameters keyed by our variable paths, at evaluation (no noise). A Sparse block, pre-norm residual:
      x = x + RR_out(MoE_s(RR_in(LN_0(x))))   RR_in: Dense over channels C -> C1, then over tokens S -> S1 (per
                                              channel vector); MoE_s routes the C1 channel vectors of length S1
      x = x + MoE_c(LN_1(x))                  MoE_c routes the S tokens (length C), top-2
    Dense blocks are the Mixer's (mixer_reference), GELU exact; then LN, mean over tokens, head."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    mixer = {k: v for k, v in p.items() if k.startswith(("stem/", "MixerBlock_", "pre_head", "head/"))}
    x = mixer_forward(mixer, images, patch, dense_blocks, "exact", include_head=False, final_norm=False)

    def normalized(v, name):
        return layer_norm(v, p[f"{name}/scale"], p[f"{name}/bias"], eps)

    def dense(v, name):
        return v @ p[f"{name}/kernel"] + p[f"{name}/bias"]

    def moe(v, name, k):
        experts = p[f"{name}/router/kernel"].shape[1]
        weights = {"router": p[f"{name}/router/kernel"], **{w: p[f"{name}/{w}"] for w in
                                                            ("kernel_0", "bias_0", "kernel_1", "bias_1")}}
        return moe_forward(v, weights, k, expert_capacity(k, v.shape[1], experts), batch_prioritized=True)

    for i in range(dense_blocks, dense_blocks + sparse_blocks):
        b = f"SparseBlock_{i}"
        y = dense(normalized(x, f"{b}/LayerNorm_0"), f"{b}/rerep_in_channels")  # [B, S, C1]
        y = dense(y.transpose(0, 2, 1), f"{b}/rerep_in_tokens")  # [B, C1, S1]: C1 items of length S1
        y = dense(moe(y, f"{b}/token_moe", token_k), f"{b}/rerep_out_tokens")  # [B, C1, S]
        x = x + dense(y.transpose(0, 2, 1), f"{b}/rerep_out_channels")
        x = x + moe(normalized(x, f"{b}/LayerNorm_1"), f"{b}/channel_moe", channel_k)
    x = layer_norm(x, p["pre_head_layer_norm/scale"], p["pre_head_layer_norm/bias"], eps)
    return x.mean(axis=1) @ p["head/kernel"] + p["head/bias"]
