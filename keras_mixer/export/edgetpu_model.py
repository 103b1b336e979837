"""An Edge-TPU-mappable graph of a trained model of any keras_mixer family, with the same weights.

The standard graphs cannot map: the GELU builtin makes compiler 16 reject the model, Dense on a [batch, tokens, C]
or [batch, H, W, C] tensor is a FULLY_CONNECTED whose output is not 1-D, LayerNorm's MEAN over channels and
GroupNorm's MEAN over H·W·C are outside "MEAN over H/W", and the families' rearrangements use 5-D tensors. This
form keeps every activation a [1, H, W, C] grid and rewrites each layer (by exact class) with ops that map:

- Dense on a grid -> 1x1 CONV_2D; the head's Dense on the pooled [1, C] vector stays FULLY_CONNECTED (1-D output);
- LayerNorm over channels -> the channel mean as a 1x1 conv C -> 1 (kernel 1/C) broadcast back by a 1x1 conv
  1 -> C (kernel 1), SUB, MUL, the same for the variance, RSQRT on the one-channel map, MUL, ADD: 2·C MACs per
  position and no broadcasting between activations (which old compilers do not map);
- GroupNorm(1) (AS-MLP) -> MEAN over H/W, the same channel mean on the [1, 1, 1, C] result, tiled back over the
  grid by CONCATENATION;
- GELU -> x·sigmoid(1.702 x) (LOGISTIC + MUL; the converter does not fuse it into the GELU builtin), or the
  model's own form with gelu=None (for checking that the rewrite is exact);
- BatchNorm (inference) -> a per-channel affine the converter folds into the neighbouring convolution;
- token mixing and the families' rearrangements -> RESHAPE and TRANSPOSE of at most 4-D with a leading 1; where
  the layout a transpose would produce only permutes an MLP's inputs and outputs, the MLP's weights are permuted
  instead (RaftMLP's horizontal mixing);
- global pooling -> MEAN (REDUCE_MAX) over H/W.

Sparse-MLP's expert layers route with top-k and one-hot gathers, which no Edge TPU op does: `edgetpu_model`
refuses them by name, or with `experts_on_cpu=True` keeps them (sigmoid GELU, tokens layout) after the mappable part,
so the compiler maps up to the first expert block and the CPU runs the rest.
"""

import dataclasses
import weakref

import keras
import numpy as np
from keras import ops

from keras_mixer.errors import ExportError
from keras_mixer.layers import (ASMLPBlock, CrossScaleEmbedding, HireBlock, InputNormalization, LayerNorm, MixerBlock,
                                MlpBlock, PatchEmbedding, PatchMerging, PermutatorBlock, QuantizedDense, RaftBlock,
                                SparseMixerBlock, SplitAttention)
from keras_mixer.layers.axial_shift import AxialShift
from keras_mixer.layers.hire_mlp import HierarchicalRearrangement
from keras_mixer.layers.permute_mlp import WeightedPermuteMLP
from keras_mixer.layers.mlp import gelu as gelu_fn
from keras_mixer.models.applications import require_keras_model


def _value(variable):
    return ops.convert_to_numpy(variable).astype(np.float32)


def _conv1x1(x, kernel, bias=None):
    """A 1x1 CONV_2D with constant weights: `kernel` (in, out)."""
    layer = keras.layers.Conv2D(kernel.shape[-1], 1, use_bias=bias is not None, data_format="channels_last")
    layer.build(x.shape)
    layer.set_weights([kernel.reshape(1, 1, *kernel.shape)] + ([bias] if bias is not None else []))
    return layer(x)


def _dense(x, dense):
    bias = _value(dense.bias) if dense.use_bias else None
    return _conv1x1(x, _value(dense.kernel), bias)


def _channel_mean(x):
    """The mean over channels at every position, as a [1, H, W, 1] map (1x1 conv with a 1/C kernel)."""
    channels = x.shape[-1]
    return _conv1x1(x, np.full((channels, 1), 1.0 / channels, np.float32))


def _spread(x, channels):
    """[1, H, W, 1] -> [1, H, W, channels], every channel a copy (1x1 conv with a kernel of ones)."""
    return _conv1x1(x, np.ones((1, channels), np.float32))


def _tile_grid(x, rows, cols):
    """[1, 1, 1, C] -> [1, rows, cols, C] by concatenation (no broadcasting op)."""
    x = ops.concatenate([x] * cols, axis=2) if cols > 1 else x
    return ops.concatenate([x] * rows, axis=1) if rows > 1 else x


def _norm(x, norm, permutation=None):
    """`norm` (a keras_mixer LayerNorm) on the grid `x`: over channels (norm.axis -1) or GroupNorm(1) (norm.axis
    (1, 2, 3)); `permutation` reindexes its affine parameters."""
    scale, bias = _value(norm.scale), _value(norm.bias)
    if permutation is not None:
        scale, bias = scale[permutation], bias[permutation]
    _, rows, cols, channels = x.shape
    if norm.axis in (-1, 3, (-1,), (3,)):
        centered = x - _spread(_channel_mean(x), channels)
        inverse_std = ops.rsqrt(_channel_mean(centered * centered) + norm.epsilon)
        return centered * _spread(inverse_std, channels) * scale + bias
    if tuple(norm.axis) != (1, 2, 3):
        raise ExportError(f"edgetpu_model cannot rewrite LayerNorm {norm.name!r} over axes {norm.axis}: it maps "
                          "normalization over the channels or over H, W and C (GroupNorm with one group)")

    def grid_mean(tensor):  # MEAN over H/W, then the channel mean: [1, 1, 1, 1]
        return _channel_mean(ops.mean(tensor, axis=(1, 2), keepdims=True))

    centered = x - _tile_grid(_spread(grid_mean(x), channels), rows, cols)
    inverse_std = ops.rsqrt(grid_mean(centered * centered) + norm.epsilon)
    return centered * _tile_grid(_spread(inverse_std, channels), rows, cols) * scale + bias


def _batch_norm_affine(norm):
    """(scale, shift) of an inference-mode BatchNormalization."""
    gamma = _value(norm.gamma) if norm.scale else 1.0
    beta = _value(norm.beta) if norm.center else 0.0
    scale = gamma / np.sqrt(_value(norm.moving_variance) + norm.epsilon)
    return scale.astype(np.float32), (beta - _value(norm.moving_mean) * scale).astype(np.float32)


def _flat_reshape(x, shape):
    return ops.reshape(x, (-1, *shape))


class _Rewriter:
    """Rewrites each layer of a keras_mixer model in the mappable form (REWRITES below says which method rewrites which
    class); see the module doc."""

    def __init__(self, gelu):
        self.gelu = gelu

    def act(self, x, own_form):
        return gelu_fn(x, self.gelu or own_form)

    def mlp(self, x, mlp, kernel_order=None):
        """MlpBlock as two 1x1 convs; `kernel_order` permutes its input and output features alike."""
        kernel_0, bias_0 = _value(mlp.dense_0.kernel), _value(mlp.dense_0.bias)
        kernel_1, bias_1 = _value(mlp.dense_1.kernel), _value(mlp.dense_1.bias)
        if kernel_order is not None:
            kernel_0, kernel_1, bias_1 = kernel_0[kernel_order], kernel_1[:, kernel_order], bias_1[kernel_order]
        return _conv1x1(self.act(_conv1x1(x, kernel_0, bias_0), mlp.gelu), kernel_1, bias_1)

    # --- layers shared by the families ----------------------------------------------------------------------------

    def dense(self, layer, x):
        if len(x.shape) == 2:  # the head on pooled features: FULLY_CONNECTED with a 1-D output
            head = keras.layers.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias)
            head.build(x.shape)  # a float Dense (a QAT head's fake quantization is not part of this form)
            head.set_weights([_value(layer.kernel)] + ([_value(layer.bias)] if layer.use_bias else []))
            return head(x)  # the graph's last layer, so exports see a softmax head as probabilities
        return layer.activation(_dense(x, layer))

    def unchanged(self, layer, x):
        return layer(x)

    def identity(self, layer, x):
        return x

    def layer_norm(self, layer, x):
        return _norm(x, layer)

    def batch_norm(self, layer, x):
        if layer.axis not in (-1, len(x.shape) - 1):
            raise ExportError(f"edgetpu_model rewrites BatchNormalization over channels; {layer.name!r} normalizes "
                              f"axis {layer.axis}")
        scale, shift = _batch_norm_affine(layer)
        return x * scale + shift

    def input_normalization(self, layer, x):  # a checkpoint's own normalization: MUL + ADD by constants
        return x * layer.scale + layer.offset

    def average_pool(self, layer, x):
        return ops.mean(x, axis=(1, 2))

    def max_pool(self, layer, x):
        return ops.max(x, axis=(1, 2))

    def reshape(self, layer, x):  # the Mixer's token grid output: our tokens already are that grid
        if tuple(layer.target_shape) != tuple(x.shape[1:]):
            raise ExportError(f"edgetpu_model cannot rewrite Reshape {layer.name!r} to {layer.target_shape} of a "
                              f"{tuple(x.shape[1:])} grid")
        return x

    def split_attention(self, layer, branches):
        _, rows, cols, channels = branches[0].shape
        count = len(branches)
        a = ops.mean(sum(branches[1:], branches[0]), axis=(1, 2), keepdims=True)  # [1, 1, 1, C]
        a = _dense(self.act(_dense(a, layer.fc1), "exact"), layer.fc2)  # [1, 1, 1, C·n], channel c·n + i
        a = ops.softmax(_flat_reshape(a, (1, channels, count)), axis=-1)
        weights = [_tile_grid(_flat_reshape(a_i, (1, 1, channels)), rows, cols) for a_i in ops.split(a, count, axis=-1)]
        return sum(branch * weight for branch, weight in zip(branches, weights))

    # --- MLP-Mixer (and Sparse-MLP's dense blocks) --------------------------------------------------------------------

    def patch_embedding(self, layer, x):
        kernel, bias = _value(layer.kernel), _value(layer.bias)
        return ops.conv(x, kernel, strides=layer.patch_size, padding="valid", data_format="channels_last") + bias

    def mixer_block(self, layer, x):
        _, rows, cols, channels = x.shape
        tokens = _flat_reshape(_norm(x, layer.norm_0), (1, rows * cols, channels))
        mixed = ops.transpose(tokens, (0, 1, 3, 2))  # [1, 1, C, S]: the token MLP runs as 1x1 convs over S
        mixed = ops.transpose(self.mlp(mixed, layer.token_mixing), (0, 1, 3, 2))
        x = x + _flat_reshape(mixed, (rows, cols, channels))
        return x + self.mlp(_norm(x, layer.norm_1), layer.channel_mixing)

    def sparse_mixer_block(self, layer, x):  # reached only with experts_on_cpu: _check_rewritable refuses it otherwise
        _, rows, cols, channels = x.shape
        # the same block (its name too, for reports) in its static-shape "dense" dispatch, which exports, and with
        # the sigmoid GELU, so the CPU part holds no GELU builtin either (the compiler would reject the file)
        config = {**layer.get_config(), "dispatch": "dense", "gelu": self.gelu or layer.get_config()["gelu"]}
        block = type(layer).from_config(config)
        block.build((1, rows * cols, channels))
        block.set_weights(layer.get_weights())
        tokens = block(ops.reshape(x, (-1, rows * cols, channels)))
        return ops.reshape(tokens, (-1, rows, cols, channels))

    # --- AS-MLP -------------------------------------------------------------------------------------------------

    def as_mlp_block(self, layer, x):
        from keras_mixer.layers.axial_shift import axial_shift

        shift = layer.axial_shift
        y = self.act(_norm(_dense(_norm(x, layer.norm1), shift.conv1), shift.norm1), "exact")
        horizontal = self.act(_dense(axial_shift(y, shift.shift_size, 2, shift.dilation), shift.conv2_1), "exact")
        vertical = self.act(_dense(axial_shift(y, shift.shift_size, 1, shift.dilation), shift.conv2_2), "exact")
        x = x + _dense(_norm(horizontal + vertical, shift.norm2), shift.conv3)
        return x + self.mlp(_norm(x, layer.norm2), layer.mlp)

    def patch_merging(self, layer, x):
        x = ops.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        return _dense(_norm(x, layer.norm), layer.reduction)

    # --- Hire-MLP -----------------------------------------------------------------------------------------------

    def hire_block(self, layer, x):
        scale, shift = _batch_norm_affine(layer.norm1)
        x = x + self.hire_mlp(layer.attn, x * scale + shift)
        scale, shift = _batch_norm_affine(layer.norm2)
        return x + self.mlp(x * scale + shift, layer.mlp)

    def hire_mlp(self, layer, x):
        from keras_mixer.layers.hire_mlp import circular_pad, roll

        def branch(axis, first, norm, second):
            length, pixel = x.shape[axis], layer.pixel
            y = circular_pad(roll(x, layer.step, axis), pixel, axis)
            _, rows, cols, channels = y.shape
            # regions into channels (channel c·p + k) with one 4-D transpose: rows as [R, p, W·C] (axis 1) or
            # columns as [H·W/p, p, C] (axis 2), then p innermost
            grouped = (rows // pixel, pixel, cols * channels) if axis == 1 else (rows * cols // pixel, pixel, channels)
            merged = (rows // pixel, cols, channels * pixel) if axis == 1 else (rows, cols // pixel, channels * pixel)
            y = _flat_reshape(ops.transpose(_flat_reshape(y, grouped), (0, 1, 3, 2)), merged)
            scale, shift = _batch_norm_affine(norm)  # folded into the bias-free first conv
            y = _conv1x1(y, _value(first.kernel) * scale, shift)
            y = _dense(ops.relu(y), second)
            swapped = (grouped[0], grouped[2], grouped[1])
            y = _flat_reshape(ops.transpose(_flat_reshape(y, swapped), (0, 1, 3, 2)), (rows, cols, channels))
            index = [slice(None)] * 4
            index[axis] = slice(0, length)
            return roll(y[tuple(index)], (-layer.step) % length, axis)

        h = branch(1, layer.mlp_h1, layer.mlp_h1_norm, layer.mlp_h2)
        w = branch(2, layer.mlp_w1, layer.mlp_w1_norm, layer.mlp_w2)
        return _dense(self.split_attention(layer.reweight, [h, w, _dense(x, layer.mlp_c)]), layer.proj)

    # --- Vision Permutator --------------------------------------------------------------------------------------

    def permutator_block(self, layer, x):
        x = x + self.permute_mlp(layer.attn, _norm(x, layer.norm1)) / layer.skip_lam
        return x + self.mlp(_norm(x, layer.norm2), layer.mlp) / layer.skip_lam

    def permute_mlp(self, layer, x):
        _, rows, cols, channels = x.shape
        segments = layer.segment_dim
        size = channels // segments
        # height branch: (h, s) into channels with w, g as the grid: [1, H, W·G, S] -> [1, W·G, H, S]
        h = ops.transpose(_flat_reshape(x, (rows, cols * segments, size)), (0, 2, 1, 3))
        h = _dense(_flat_reshape(h, (cols, segments, rows * size)), layer.mlp_h)
        h = ops.transpose(_flat_reshape(h, (cols * segments, rows, size)), (0, 2, 1, 3))
        # width branch: (w, s) into channels with g, h as the grid: [1, H·W, G, S] -> [1, G, H·W, S]
        w = ops.transpose(_flat_reshape(x, (rows * cols, segments, size)), (0, 2, 1, 3))
        w = _dense(_flat_reshape(w, (segments, rows, cols * size)), layer.mlp_w)
        w = ops.transpose(_flat_reshape(w, (segments, rows * cols, size)), (0, 2, 1, 3))
        branches = [_flat_reshape(h, (rows, cols, channels)), _flat_reshape(w, (rows, cols, channels)),
                    _dense(x, layer.mlp_c)]
        return _dense(self.split_attention(layer.reweight, branches), layer.proj)

    # --- RaftMLP ------------------------------------------------------------------------------------------------

    def cross_scale_embedding(self, layer, x):
        return layer(x)  # PADs, strided CONV_2Ds and ADDs already

    def raft_block(self, layer, x):
        _, rows, cols, channels = x.shape
        rafts = layer.raft_size
        size = channels // rafts
        # the token norms' affine parameters are indexed (i_o, i_r); the grid's channels are (i_r, i_o)
        raft_major = np.arange(channels).reshape(size, rafts).T.reshape(-1)
        # vertical: rows (i_o, w), values (i_r, h): [1, h, w·r, o] -> [1, o, w·r, h], one transpose each way
        y = _flat_reshape(_norm(x, layer.vertical_norm, raft_major), (rows, cols * rafts, size))
        y = _flat_reshape(ops.transpose(y, (0, 3, 2, 1)), (size, cols, rafts * rows))
        y = _flat_reshape(self.mlp(y, layer.vertical_mlp), (size, cols * rafts, rows))
        x = x + _flat_reshape(ops.transpose(y, (0, 3, 2, 1)), (rows, cols, channels))
        # horizontal: rows (i_o, h), values (i_r, w); [1, h·w, r, o] -> [1, o, h·w, r] leaves the values ordered
        # (w, i_r), so the MLP's features are permuted to that order instead of transposing again
        y = _flat_reshape(_norm(x, layer.horizontal_norm, raft_major), (rows * cols, rafts, size))
        y = _flat_reshape(ops.transpose(y, (0, 3, 1, 2)), (size, rows, cols * rafts))
        column_major = np.arange(rafts * cols).reshape(rafts, cols).T.reshape(-1)
        y = _flat_reshape(self.mlp(y, layer.horizontal_mlp, column_major), (size, rows * cols, rafts))
        x = x + _flat_reshape(ops.transpose(y, (0, 2, 3, 1)), (rows, cols, channels))
        return x + self.mlp(_norm(x, layer.channel_norm), layer.channel_mlp)

    def __call__(self, layer, *args, **kwargs):
        return REWRITES[type(layer)](self, layer, *args)


# Each layer class the rewrite reproduces, by the class itself: a subclass, or another package's class of the same
# name, is not what the rule was written for, and is refused by name (_check_rewritable)
REWRITES = {
    keras.layers.Dense: _Rewriter.dense, QuantizedDense: _Rewriter.dense,
    keras.layers.Conv2D: _Rewriter.unchanged, keras.layers.ZeroPadding2D: _Rewriter.unchanged,
    keras.layers.ReLU: _Rewriter.unchanged, keras.layers.Dropout: _Rewriter.identity,
    keras.layers.BatchNormalization: _Rewriter.batch_norm, keras.layers.Reshape: _Rewriter.reshape,
    keras.layers.GlobalAveragePooling2D: _Rewriter.average_pool, keras.layers.GlobalAveragePooling1D: _Rewriter.average_pool,
    keras.layers.GlobalMaxPooling2D: _Rewriter.max_pool, keras.layers.GlobalMaxPooling1D: _Rewriter.max_pool,
    LayerNorm: _Rewriter.layer_norm, InputNormalization: _Rewriter.input_normalization,
    SplitAttention: _Rewriter.split_attention,
    PatchEmbedding: _Rewriter.patch_embedding, MixerBlock: _Rewriter.mixer_block,
    SparseMixerBlock: _Rewriter.sparse_mixer_block,
    ASMLPBlock: _Rewriter.as_mlp_block, PatchMerging: _Rewriter.patch_merging,
    HireBlock: _Rewriter.hire_block,
    PermutatorBlock: _Rewriter.permutator_block,
    CrossScaleEmbedding: _Rewriter.cross_scale_embedding, RaftBlock: _Rewriter.raft_block,
}
# Sparse-MLP's routing: kept on the CPU with experts_on_cpu=True, refused otherwise
EXPERT_LAYERS = (SparseMixerBlock,)

# What each rewrite above reads of its layer, by name, and what each piece must be. A rewrite is a second forward
# pass of its block, so a sub-layer renamed or swapped for another class in the block's own module must stop the
# export with the piece's name (and fail that family's row in tests/test_families.py), not raise AttributeError
# halfway or build a different model. Dense covers QuantizedDense and FusedDense: the rewrite reads kernel and bias.
_DENSE, _BATCH_NORM, _VARIABLE, _NUMBER = keras.layers.Dense, keras.layers.BatchNormalization, keras.Variable, (int, float)
BLOCK_PIECES = {
    LayerNorm: {"scale": _VARIABLE, "bias": _VARIABLE, "epsilon": _NUMBER, "axis": (int, tuple, list)},
    MlpBlock: {"dense_0": _DENSE, "dense_1": _DENSE, "gelu": str},
    SplitAttention: {"fc1": _DENSE, "fc2": _DENSE},
    PatchEmbedding: {"kernel": _VARIABLE, "bias": _VARIABLE, "patch_size": int},
    MixerBlock: {"norm_0": LayerNorm, "token_mixing": MlpBlock, "norm_1": LayerNorm, "channel_mixing": MlpBlock},
    ASMLPBlock: {"norm1": LayerNorm, "axial_shift": AxialShift, "norm2": LayerNorm, "mlp": MlpBlock},
    AxialShift: {"conv1": _DENSE, "norm1": LayerNorm, "conv2_1": _DENSE, "conv2_2": _DENSE, "norm2": LayerNorm,
                 "conv3": _DENSE, "shift_size": int, "dilation": int},
    PatchMerging: {"norm": LayerNorm, "reduction": _DENSE},
    HireBlock: {"norm1": _BATCH_NORM, "attn": HierarchicalRearrangement, "norm2": _BATCH_NORM, "mlp": MlpBlock},
    HierarchicalRearrangement: {"pixel": int, "step": int, "mlp_h1": _DENSE, "mlp_h1_norm": _BATCH_NORM,
                                "mlp_h2": _DENSE, "mlp_w1": _DENSE, "mlp_w1_norm": _BATCH_NORM, "mlp_w2": _DENSE,
                                "mlp_c": _DENSE, "reweight": SplitAttention, "proj": _DENSE},
    PermutatorBlock: {"norm1": LayerNorm, "attn": WeightedPermuteMLP, "norm2": LayerNorm, "mlp": MlpBlock,
                      "skip_lam": _NUMBER},
    WeightedPermuteMLP: {"segment_dim": int, "mlp_h": _DENSE, "mlp_w": _DENSE, "mlp_c": _DENSE,
                         "reweight": SplitAttention, "proj": _DENSE},
    RaftBlock: {"raft_size": int, "vertical_norm": LayerNorm, "vertical_mlp": MlpBlock, "horizontal_norm": LayerNorm,
                "horizontal_mlp": MlpBlock, "channel_norm": LayerNorm, "channel_mlp": MlpBlock},
}


def missing_pieces(layer, path=None):
    """Each piece BLOCK_PIECES says the rewrite of `layer` reads that `layer` lacks or holds as another type, as
    "block.piece (expected T, got U)", through the sub-layers the table also names; [] when the rewrite can run."""
    path = path or layer.name
    problems = []
    for name, expected in BLOCK_PIECES.get(type(layer), {}).items():
        piece = getattr(layer, name, None)
        if not isinstance(piece, expected):
            wanted = "/".join(kind.__name__ for kind in (expected if isinstance(expected, tuple) else (expected,)))
            got = "nothing" if not hasattr(layer, name) else type(piece).__name__
            problems.append(f"{path}.{name} (expected {wanted}, got {got})")
        elif isinstance(piece, keras.layers.Layer):
            problems += missing_pieces(piece, f"{path}.{name}")
    return problems


def _check_rewritable(model, experts_on_cpu):
    """ExportError naming what `edgetpu_model` cannot rewrite: a layer class it does not know (it would otherwise
    be dropped or mistranslated), or Sparse-MLP's expert layers unless they may run on the CPU. Returns the names
    of the expert layers it allows."""
    if not isinstance(model, keras.Model) or not hasattr(model, "operations") or isinstance(model, keras.Sequential):
        raise ExportError(f"edgetpu_model rewrites keras_mixer's functional models; got {type(model).__name__}")
    layers = [op for op in model.operations if type(op).__name__ != "InputLayer"]
    known = {layer.__name__ for layer in REWRITES}
    unknown = sorted({type(op).__name__ if type(op).__name__ not in known else
                      f"{type(op).__module__}.{type(op).__name__} (not the {type(op).__name__} it rewrites)"
                      for op in layers if type(op) not in REWRITES})
    if unknown:
        raise ExportError(f"edgetpu_model cannot rewrite {type(model).__name__} {model.name!r}: it has "
                          f"{', '.join(unknown)} (it rewrites the layers of keras_mixer's families: "
                          f"{', '.join(sorted(known))})")
    missing = [problem for op in layers for problem in missing_pieces(op)]
    if missing:
        raise ExportError(f"edgetpu_model cannot rewrite {model.name!r}: its rewrite reads pieces the layers do not "
                          f"have: {'; '.join(missing)} (a sub-layer renamed or replaced? BLOCK_PIECES in "
                          "keras_mixer/export/edgetpu_model.py names what each block's rewrite reads)")
    experts = [op.name for op in layers if type(op) in EXPERT_LAYERS]
    if experts and not experts_on_cpu:
        raise ExportError(
            f"edgetpu_model cannot map the expert layers {', '.join(experts)} (SparseMixerBlock) of {model.name!r}: "
            "their top-k routing and one-hot dispatch have no Edge TPU op. Pass experts_on_cpu=True for a graph "
            "that maps up to the first expert layer and runs the rest on the CPU (keras-mixer edgetpu-check "
            "shows the split)")
    return experts


def edgetpu_model(model, gelu="sigmoid", experts_on_cpu=False):
    """A batch-1 functional model computing `model` (any keras_mixer family; float or QAT: its float weights are
    used) in the Edge-TPU-mappable form described above.

    `gelu`: "sigmoid" (mappable) or None to keep the model's own form (then the output equals the model's to float
    precision). `experts_on_cpu`: for Sparse-MLP, keep the expert blocks (they cannot map) instead of refusing.
    Export it with PTQ int8 (`to_tflite`, which quantizes every op of this graph: `integer_only` defaults to True
    for it). Raises ExportError naming any layer it cannot rewrite."""
    from keras_mixer.quantization import is_quantized, strip_quantization

    require_keras_model(model, "edgetpu_model", ExportError)
    if gelu not in ("sigmoid", None):
        raise ExportError(f"edgetpu_model: gelu must be 'sigmoid' or None (the model's own form), got {gelu!r}")
    if edgetpu_form(model) is not None:  # its anonymous ops were refused one by one
        raise ExportError(f"{model.name!r} is an Edge TPU form already (edgetpu_model's output): export it as it is")
    if is_quantized(model):  # the form is quantized post-training as a whole: a QAT model gives its float weights
        model = strip_quantization(model)
    experts = _check_rewritable(model, experts_on_cpu)
    images = keras.Input(model.input_shape[1:], batch_size=1, name="images")
    rewritten = keras.models.clone_model(model, input_tensors=images, clone_function=lambda layer: layer,
                                         call_function=_Rewriter(gelu))
    for got, want in zip(rewritten.outputs, model.outputs):
        if tuple(got.shape[1:]) != tuple(want.shape[1:]):
            raise ExportError(f"edgetpu_model: the rewritten {model.name!r} outputs {tuple(got.shape[1:])}, the "
                              f"model {tuple(want.shape[1:])}")
    edgetpu_graph = keras.Model(images, rewritten.output, name=f"{model.name}_edgetpu")
    _FORMS[edgetpu_graph] = EdgeTPUForm(model, gelu, experts_on_cpu, keeps_experts=bool(experts))
    return edgetpu_graph


@dataclasses.dataclass(frozen=True)
class EdgeTPUForm:
    """What `to_tflite` must know of a graph `edgetpu_model` built, beyond its layers (`edgetpu_form(graph)`): the
    Edge TPU runs integer ops only, so its export is all int8 by default (`integer_only`); the expert layers of a
    Sparse-MLP kept on the CPU (`keeps_experts`) export float, as int8 routing flips expert choices; and channel
    equalization rescales the weights of the model the form was built from (`source_model`) and builds the form
    again (`rebuild`), since the form's constants are baked into anonymous ops."""

    source_model: keras.Model
    gelu: str | None
    experts_on_cpu: bool
    keeps_experts: bool
    integer_only: bool = True

    def rebuild(self, source):
        return edgetpu_model(source, self.gelu, self.experts_on_cpu)


_FORMS = weakref.WeakKeyDictionary()  # each graph edgetpu_model built -> its EdgeTPUForm, for as long as it lives


def edgetpu_form(model):
    """The `EdgeTPUForm` of a graph `edgetpu_model` built, or None for any other model."""
    return _FORMS.get(model)
