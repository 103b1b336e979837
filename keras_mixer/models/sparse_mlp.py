"""Sparse-MLP (Lou, Xue, Zheng, You, 2021: "Sparse-MLP: A Fully-MLP Architecture with Conditional Computation",
v3 "Cross-token Modeling with Conditional Computation"): an MLP-Mixer whose last blocks are mixture-of-experts
blocks (`SparseMixerBlock`).

No official code or checkpoint exists; the variants and several details are reconstructed from the abstracts and
paper summaries (README, "Sparse-MLP: what is reconstructed"). Dense blocks are named as the official Mixer's
(`stem`, `MixerBlock_{i}`, `pre_head_layer_norm`, `head`) so a Mixer's weights can seed them by path.
"""

import keras
from keras import ops

from keras_mixer import weights as weights_lib
from keras_mixer.errors import WeightsError
from keras_mixer.layers import LayerNorm, MixerBlock, PatchEmbedding, SparseMixerBlock
from keras_mixer.models.applications import check_arguments, finish_model, image_input, token_head, variant_builder
from keras_mixer.models.mlp_mixer import MIXER_VARIANTS

# variant: its Mixer backbone's config, the sparse blocks at the end, token-mixing and channel-mixing experts; all
# [U] in the spec except the Mixer-B ablation backbone
SPARSE_MLP_VARIANTS = {
    "sparse_mlp_small": dict(**MIXER_VARIANTS["mixer_s16"], num_sparse_blocks=2, token_experts=4, channel_experts=4),
    "sparse_mlp_base": dict(**MIXER_VARIANTS["mixer_b16"], num_sparse_blocks=2, token_experts=8, channel_experts=4),
    "sparse_mlp_large": dict(**MIXER_VARIANTS["mixer_l16"], num_sparse_blocks=4, token_experts=16, channel_experts=4),
}
# names registered before the registry's naming rule (keras_mixer.models.registry), kept as aliases
SPARSE_MLP_FORMER_NAMES = {
    "sparse_mlp_small": ("sparse_mlp_s",),
    "sparse_mlp_base": ("sparse_mlp_b",),
    "sparse_mlp_large": ("sparse_mlp_l",),
}


@keras.saving.register_keras_serializable(package="keras_mixer")
class SparseMLPModel(keras.Model):
    """A functional model that reports its experts' summed auxiliary loss as the `aux_loss` metric in `fit`
    (the loss itself already includes it: Keras adds every `add_loss` term)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.aux_loss_tracker = keras.metrics.Mean(name="aux_loss")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if self.losses:
            self.aux_loss_tracker.update_state(ops.sum(ops.stack(self.losses)))
        return loss


def SparseMLP(
    patch_size=16,
    hidden_dim=512,
    num_blocks=8,
    tokens_mlp_dim=256,
    channels_mlp_dim=2048,
    num_sparse_blocks=2,
    token_experts=4,
    channel_experts=4,
    token_k=1,
    channel_k=2,
    rerep="token",
    rerep_token_factor=2.0,
    rerep_channel_factor=0.5,
    capacity_factor_train=1.25,
    capacity_factor_eval=2.0,
    min_capacity=4,
    noise_std=None,
    aux_weight=0.01,
    batch_prioritized=True,
    dispatch="sparse",
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    drop_path_rate=0.0,
    dropout_rate=0.0,
    gelu="exact",
    name="sparse_mlp",
):
    """Builds a Sparse-MLP: the Mixer config (`patch_size, hidden_dim, num_blocks, tokens_mlp_dim,
    channels_mlp_dim`), the last `num_sparse_blocks` blocks replaced by `SparseMixerBlock`s with `token_experts`
    (top-`token_k`) token-mixing and `channel_experts` (top-`channel_k`) channel-mixing experts, plus the
    keras.applications arguments. Routing, capacity, auxiliary loss and re-represent options: see
    `SparseMixerBlock` / `MixtureOfExperts`. `dispatch="dense"` builds the export form (same outputs, static
    matmuls only); `weights`: a Keras weights file (no official checkpoint exists)."""
    check_arguments(pooling, weights, include_top, classifier_activation, classes, drop_path_rate, dropout_rate)
    if weights is not None and not weights_lib.is_keras_file(weights):
        raise WeightsError(f"weights={weights!r}: Sparse-MLP has no released checkpoint; pass a Keras file "
                           "(.weights.h5, .keras) saved from this architecture")
    images, input_shape = image_input(input_tensor, input_shape)
    stem = PatchEmbedding(patch_size, hidden_dim, name="stem")
    grid = stem.grid_shape((None,) + input_shape)
    x = stem(images)
    for i in range(num_blocks):
        rate = drop_path_rate * i / max(num_blocks - 1, 1)
        if i < num_blocks - num_sparse_blocks:
            x = MixerBlock(tokens_mlp_dim, channels_mlp_dim, gelu=gelu, drop_path_rate=rate,
                           dropout_rate=dropout_rate, name=f"MixerBlock_{i}")(x)
        else:
            x = SparseMixerBlock(
                tokens_mlp_dim, channels_mlp_dim, token_experts, channel_experts, token_k, channel_k, rerep,
                rerep_token_factor, rerep_channel_factor, capacity_factor_train, capacity_factor_eval, min_capacity,
                noise_std, aux_weight, batch_prioritized, dispatch, gelu, rate, name=f"SparseBlock_{i}")(x)
    x = LayerNorm(name="pre_head_layer_norm")(x)
    x = token_head(x, grid, include_top, pooling, classes, classifier_activation, dropout_rate)
    model = finish_model(images, input_tensor, x, name, SparseMLPModel)
    if weights is not None:
        weights_lib.load_keras_weights(model, weights)
    return model


def with_dispatch(model, dispatch):
    """`model` (same weights) with every mixture of experts in the `dispatch` form: "dense" to export to TFLite,
    "sparse" to train. Returns `model` itself when nothing changes."""
    config = model.get_config()
    changed = False
    for layer in config.get("layers", []):
        if layer["class_name"] in ("SparseMixerBlock", "MixtureOfExperts") and layer["config"]["dispatch"] != dispatch:
            layer["config"]["dispatch"] = dispatch
            changed = True
    if not changed:
        return model
    rebuilt = model.__class__.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


SparseMLPSmall, SparseMLPBase, SparseMLPLarge = (
    variant_builder(variant, function, SparseMLP, SPARSE_MLP_VARIANTS[variant],
                    former_names=SPARSE_MLP_FORMER_NAMES.get(variant, ()))
    for variant, function in (("sparse_mlp_small", "SparseMLPSmall"), ("sparse_mlp_base", "SparseMLPBase"),
                              ("sparse_mlp_large", "SparseMLPLarge"))
)
