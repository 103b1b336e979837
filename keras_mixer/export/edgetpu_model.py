"""An Edge-TPU-mappable graph of a trained Mixer, with the same weights.

The standard graph cannot map: it uses the GELU builtin (compiler 16 rejects the model), Dense on [batch, tokens, C]
(FULLY_CONNECTED must have a 1-D output) and LayerNorm's MEAN over channels (MEAN maps over H/W only). This form
keeps activations as a [1, H, W, C] grid and writes every piece with mappable ops:

- Dense -> 1x1 CONV_2D (the kernel reshaped to (1, 1, in, out));
- token mixing -> reshape to [1, 1, S, C], TRANSPOSE to [1, 1, C, S] (4-D), two 1x1 convs over S, and back;
- LayerNorm -> the channel mean as a 1x1 conv with a constant 1/C kernel of C outputs (a mean already broadcast
  to every channel, so no broadcasting op), SUB, MUL (square), the same conv for the variance, ADD, RSQRT, MUL, ADD;
- GELU -> x * sigmoid(1.702 x) (LOGISTIC + MUL; the converter does not fuse it back into GELU), or the model's own
  form with gelu=None (for checking that the rewrite is exact);
- global average pool -> MEAN over H/W; head -> FULLY_CONNECTED on the pooled [1, C] vector.
"""

import keras
import numpy as np
from keras import ops

from keras_mixer.errors import ExportError
from keras_mixer.layers import LayerNorm, MixerBlock, PatchEmbedding
from keras_mixer.layers.mlp import gelu as gelu_fn


def _value(variable):
    return keras.ops.convert_to_numpy(variable)


def _conv1x1(x, kernel, bias=None):
    layer = keras.layers.Conv2D(kernel.shape[-1], 1, use_bias=bias is not None)
    layer.build(x.shape)
    layer.set_weights([kernel.reshape(1, 1, *kernel.shape)] + ([bias] if bias is not None else []))
    return layer(x)


def _activation(x, form):
    if form == "sigmoid":
        return x * ops.sigmoid(1.702 * x)
    return gelu_fn(x, form)


def _layer_norm(x, norm):
    channels = x.shape[-1]
    averaging = np.full((channels, channels), 1.0 / channels, np.float32)
    centered = x - _conv1x1(x, averaging)
    variance = _conv1x1(centered * centered, averaging)
    return centered * ops.rsqrt(variance + norm.epsilon) * _value(norm.scale) + _value(norm.bias)


def _mlp(x, mlp, form):
    hidden = _activation(_conv1x1(x, _value(mlp.dense_0.kernel), _value(mlp.dense_0.bias)), form)
    return _conv1x1(hidden, _value(mlp.dense_1.kernel), _value(mlp.dense_1.bias))


def _block(x, block, form):
    _, rows, cols, channels = x.shape
    tokens = keras.layers.Reshape((1, rows * cols, channels))(_layer_norm(x, block.norm_0))
    mixed = ops.transpose(tokens, (0, 1, 3, 2))  # [1, 1, C, S]: the token MLP runs as 1x1 convs over S
    mixed = ops.transpose(_mlp(mixed, block.token_mixing, form), (0, 1, 3, 2))
    x = x + keras.layers.Reshape((rows, cols, channels))(mixed)
    return x + _mlp(_layer_norm(x, block.norm_1), block.channel_mixing, form)


# Every operation of a Mixer this rewrite reproduces, by exact type: anything else (a subclass such as Sparse-MLP's
# SparseMixerBlock, another family's layers, max pooling, a custom layer) would be dropped from the graph silently.
REWRITTEN_OPERATIONS = ("InputLayer", "PatchEmbedding", "MixerBlock", "LayerNorm", "GlobalAveragePooling1D",
                        "Dropout", "Dense", "QuantizedDense")


def _check_rewritable(model):
    """ExportError naming what `edgetpu_model` cannot rewrite: an operation it does not know, or a token-grid
    output (the rewrite ends in the pooled features or the head)."""
    operations = {type(op).__name__ for op in getattr(model, "operations", model.layers)}
    if "MixerBlock" in operations and "GlobalAveragePooling1D" not in operations:
        raise ExportError(f"edgetpu_model rewrites classifiers and pooled backbones; {model.name!r} outputs its "
                          "token grid (build it with include_top=True or pooling='avg')")
    unknown = sorted(operations - set(REWRITTEN_OPERATIONS))
    if unknown:
        raise ExportError(f"edgetpu_model cannot rewrite {type(model).__name__} {model.name!r}: it has "
                          f"{', '.join(unknown)} (it rewrites MLP-Mixers: {', '.join(REWRITTEN_OPERATIONS)})")


def edgetpu_model(model, gelu="sigmoid"):
    """A batch-1 functional model computing `model` (a keras_mixer Mixer, float or QAT: its float weights are
    used) in the Edge-TPU-mappable form described above. `gelu`: "sigmoid" (mappable) or None to keep the model's
    own form (then the output equals the model's to float precision). Export it with PTQ int8 (`to_tflite`, which
    quantizes every op of this graph: `integer_only` defaults to True for it)."""
    _check_rewritable(model)
    blocks = [layer for layer in model.layers if isinstance(layer, MixerBlock)]
    stem = next((layer for layer in model.layers if isinstance(layer, PatchEmbedding)), None)
    norms = [layer for layer in model.layers if isinstance(layer, LayerNorm)]
    if stem is None or not blocks or not norms:
        raise ExportError(f"edgetpu_model needs a keras_mixer MLP-Mixer; {model.name!r} has no stem/blocks/norm")
    images = keras.Input(model.input_shape[1:], batch_size=1, name="images")
    x = ops.conv(images, _value(stem.kernel), strides=stem.patch_size, padding="valid") + _value(stem.bias)
    for block in blocks:
        x = _block(x, block, gelu or block.gelu)
    x = ops.mean(_layer_norm(x, norms[-1]), axis=(1, 2))
    head = model.layers[-1]
    if isinstance(head, keras.layers.Dense):
        x = ops.matmul(x, _value(head.kernel)) + _value(head.bias)
        x = head.activation(x)
    edgetpu_graph = keras.Model(images, x, name=f"{model.name}_edgetpu")
    edgetpu_graph.integer_only_export = True  # the Edge TPU runs integer ops only; read by to_tflite
    return edgetpu_graph
