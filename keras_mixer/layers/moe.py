"""A mixture-of-experts MLP layer (GShard / V-MoE routing) with two numerically equal execution forms."""

import math

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import host_seeds
from keras_mixer.layers.mlp import gelu

DISPATCH_FORMS = ("sparse", "dense")


def squared_coefficient_of_variation(values):
    """(std / mean)² of a vector: 0 when perfectly balanced."""
    mean = ops.mean(values)
    return ops.mean(ops.square(values - mean)) / (ops.square(mean) + 1e-9)


def normal_cdf(z):
    return 0.5 * (1.0 + ops.erf(z / math.sqrt(2.0)))


@keras.saving.register_keras_serializable(package="keras_mixer")
class MixtureOfExperts(keras.layers.Layer):
    """Routes each item (row) of [batch, items, dim] to its top-`k` of `num_experts` MLPs (dim -> hidden_dim ->
    dim, GELU) and sums their outputs weighted by the gate.

    Router (V-MoE): gate = TopK(softmax(x·W_g + ε)), W_g without bias, ε ~ N(0, noise_std²) in training only
    (default noise_std = 1/num_experts); the selected gate values are used as they are (not renormalized).
    Capacity: every expert takes at most C = max(min_capacity, ceil(k · capacity_factor · items / num_experts))
    items of each example (capacity_factor_train in training, capacity_factor_eval otherwise); choice j of every
    item is served before choice j + 1 (GShard), and within a choice, items in order of their top-1 gate
    (`batch_prioritized`, V-MoE's Batch Prioritized Routing) or of position. Items over capacity get nothing from
    that expert (the block's residual carries them).
    Auxiliary loss, added with `add_loss` in training: aux_weight · (½ CV²(importance) + ½ CV²(load)) with
    importance_e = Σ softmax(x·W_g)_e and load_e = Σ P(expert e stays in the top-k under new noise) (V-MoE's
    normal-CDF estimate; the load term needs noise and k < num_experts, else only importance counts).

    `dispatch`: "sparse" gathers each expert's items into [batch, experts, capacity, dim] buffers with one-hot
    dispatch / combine tensors (einsum; compute ∝ k · capacity_factor) — the training form; "dense" runs every
    expert on every item and weighs the outputs by the same kept gates (compute ∝ num_experts, only static
    shapes, matmuls and elementwise ops) — the export form. Both give the same output.
    """

    # int8 exports keep a mixture of experts float (top-k routing has no faithful integer form: keras_mixer.export),
    # so a QAT copy keeps it float too (`keras_mixer.quantization.float_layers` passes it)
    float_in_int8_export = True

    def __init__(self, num_experts, hidden_dim, k=1, capacity_factor_train=1.25, capacity_factor_eval=2.0,
                 min_capacity=4, noise_std=None, aux_weight=0.01, batch_prioritized=True, dispatch="sparse",
                 gelu="exact", seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= k <= num_experts:
            raise KerasMixerError(f"k must be between 1 and num_experts={num_experts}, got {k}")
        if dispatch not in DISPATCH_FORMS:
            raise KerasMixerError(f"dispatch must be one of {DISPATCH_FORMS}, got {dispatch!r}")
        self.num_experts, self.hidden_dim, self.k = num_experts, hidden_dim, k
        self.capacity_factor_train, self.capacity_factor_eval = capacity_factor_train, capacity_factor_eval
        self.min_capacity = min_capacity
        self.noise_std = 1.0 / num_experts if noise_std is None else noise_std
        self.aux_weight, self.batch_prioritized = aux_weight, batch_prioritized
        self.dispatch, self.gelu = dispatch, gelu
        self.seed = seed
        self.seed_generator = host_seeds.seed_generator(seed)

    def build(self, input_shape):
        _, items, dim = input_shape
        if items is None:
            raise KerasMixerError(f"{self.name}: the item count must be static (capacity is a fixed buffer size)")
        self.items, experts = items, self.num_experts
        self.router = keras.layers.Dense(experts, use_bias=False, name="router")
        self.router.build(input_shape)

        def glorot(fan_in, fan_out):  # per expert, as for a Dense of that shape
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            return keras.initializers.RandomUniform(-limit, limit)

        self.kernel_0 = self.add_weight(name="kernel_0", shape=(experts, dim, self.hidden_dim),
                                        initializer=glorot(dim, self.hidden_dim))
        self.bias_0 = self.add_weight(name="bias_0", shape=(experts, self.hidden_dim), initializer="zeros")
        self.kernel_1 = self.add_weight(name="kernel_1", shape=(experts, self.hidden_dim, dim),
                                        initializer=glorot(self.hidden_dim, dim))
        self.bias_1 = self.add_weight(name="bias_1", shape=(experts, dim), initializer="zeros")

    def capacity(self, training):
        factor = self.capacity_factor_train if training else self.capacity_factor_eval
        capacity = max(self.min_capacity, math.ceil(self.k * factor * self.items / self.num_experts))
        return min(capacity, self.items)  # an expert can never receive more than every item once

    def _served_before(self, top_gate):
        """[batch or 1, items, items]: 1 where item m is queued ahead of item n (row n, column m)."""
        position = ops.arange(self.items)
        earlier = ops.cast(position[None, :] < position[:, None], "float32")[None]
        if not self.batch_prioritized:
            return earlier
        higher = ops.cast(top_gate[:, None, :] > top_gate[:, :, None], "float32")
        tie = ops.cast(top_gate[:, None, :] == top_gate[:, :, None], "float32")
        return higher + tie * earlier

    def route(self, x, training=False):
        """(logits, noisy logits, per choice j: (kept assignment [b, n, e], its gate [b, n, 1], buffer position
        [b, n, e])) — everything both dispatch forms share."""
        logits = ops.cast(self.router(x), "float32")
        noisy = logits
        if training and self.noise_std > 0:
            noisy = logits + self.noise_std * host_seeds.normal(ops.shape(logits), self.seed_generator, like=logits)
        probabilities = ops.softmax(noisy, axis=-1)
        # rank the logits, not the probabilities: same order, but int8 softmax outputs (steps of 1/256) tie often
        _, experts = ops.top_k(noisy, self.k)
        assignments = [ops.one_hot(experts[..., j], self.num_experts) for j in range(self.k)]
        gates = [ops.sum(probabilities * assigned, axis=-1, keepdims=True) for assigned in assignments]
        before = self._served_before(gates[0][..., 0])
        capacity = self.capacity(training)
        filled = ops.zeros_like(logits[:, :1, :])  # kept items per expert from earlier choices
        choices = []
        for assigned, gate in zip(assignments, gates):
            position = ops.matmul(before, assigned) + filled
            kept = assigned * ops.cast(position < capacity, "float32")
            choices.append((kept, gate, position))
            filled = filled + ops.sum(kept, axis=1, keepdims=True)
        return logits, noisy, choices

    def auxiliary_loss(self, logits, noisy):
        importance = ops.sum(ops.softmax(logits, axis=-1), axis=(0, 1))
        loss = squared_coefficient_of_variation(importance)
        if self.noise_std > 0 and self.k < self.num_experts:
            top_noisy, _ = ops.top_k(noisy, self.k + 1)
            in_top_k = ops.cast(noisy >= top_noisy[..., self.k - 1:self.k], "float32")
            # an expert in the top k stays there while it beats the (k+1)-th value; one outside must beat the k-th
            threshold = in_top_k * top_noisy[..., self.k:] + (1 - in_top_k) * top_noisy[..., self.k - 1:self.k]
            load = ops.sum(1.0 - normal_cdf((threshold - logits) / self.noise_std), axis=(0, 1))
            loss = 0.5 * loss + 0.5 * squared_coefficient_of_variation(load)
        return self.aux_weight * loss

    def call(self, x, training=None):
        logits, noisy, choices = self.route(x, training)
        if training and self.aux_weight:
            self.add_loss(self.auxiliary_loss(logits, noisy))
        x32 = ops.cast(x, "float32")
        kernel_0, bias_0 = ops.cast(self.kernel_0, "float32"), ops.cast(self.bias_0, "float32")
        kernel_1, bias_1 = ops.cast(self.kernel_1, "float32"), ops.cast(self.bias_1, "float32")
        if self.dispatch == "dense":
            weights = sum(kept * gate for kept, gate, _ in choices)  # [b, n, e]
            hidden = gelu(ops.einsum("bnd,edh->bneh", x32, kernel_0) + bias_0, self.gelu)
            outputs = ops.einsum("bneh,ehd->bned", hidden, kernel_1) + bias_1
            out = ops.einsum("bne,bned->bnd", weights, outputs)
        else:
            capacity = self.capacity(training)
            # a dropped token (kept 0) can sit past the capacity: clamped, as torch's one_hot refuses it
            slots = [kept[..., None] * ops.one_hot(ops.minimum(ops.cast(position, "int32"), capacity - 1), capacity)
                     for kept, _, position in choices]
            dispatch = sum(slots)  # [b, n, e, c]
            combine = sum(slot * gate[..., None] for slot, (_, gate, _) in zip(slots, choices))
            buffers = ops.einsum("bnec,bnd->becd", dispatch, x32)
            hidden = gelu(ops.einsum("becd,edh->bech", buffers, kernel_0) + bias_0[:, None], self.gelu)
            outputs = ops.einsum("bech,ehd->becd", hidden, kernel_1) + bias_1[:, None]
            out = ops.einsum("bnec,becd->bnd", combine, outputs)
        return ops.cast(out, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "hidden_dim": self.hidden_dim, "k": self.k,
                "capacity_factor_train": self.capacity_factor_train,
                "capacity_factor_eval": self.capacity_factor_eval, "min_capacity": self.min_capacity,
                "noise_std": self.noise_std, "aux_weight": self.aux_weight,
                "batch_prioritized": self.batch_prioritized, "dispatch": self.dispatch, "gelu": self.gelu, "seed": self.seed}
