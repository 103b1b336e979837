"""Adapting token-mixing weights to another token count (fine-tuning at another resolution).

Both functions take and return official-layout arrays: W1 (S, D), b1 (D,), W2 (D, S), b2 (S,) for S tokens on a
row-major (rows, cols) patch grid.
"""

import numpy as np

from keras_mixer.errors import WeightsError


def _tile_token_ids(old_grid, new_grid):
    """[groups, S_old] new-grid token ids: group g is the g-th contiguous old-grid-sized tile, row-major."""
    (h0, w0), (h, w) = old_grid, new_grid
    if h % h0 or w % w0:
        raise WeightsError(
            f"block-diagonal resize needs the new patch grid {h}x{w} to be an integer multiple of the "
            f"checkpoint's {h0}x{w0}; use token_mixing_resize='interpolate' for other sizes"
        )
    rows = (np.arange(h // h0)[:, None, None, None] * h0 + np.arange(h0)[None, None, :, None])
    cols = (np.arange(w // w0)[None, :, None, None] * w0 + np.arange(w0)[None, None, None, :])
    return (rows * w + cols).reshape((h // h0) * (w // w0), h0 * w0)


def block_diagonal(w1, b1, w2, b2, old_grid, new_grid):
    """The MLP-Mixer paper's initialization for higher resolution (appendix on fine-tuning at higher resolution):
    the K = (h/h0)·(w/w0) groups of tokens each get their own copy of the pre-trained token MLP, so the new
    W1 is block-diagonal with K copies of the old one (hidden width K·D) and W2 likewise.

    Our choice of groups: contiguous tiles of the old grid's size (the top-left h0 x w0 patches are group 0, ...),
    so each copy sees a spatially coherent sub-image laid out exactly as during pre-training. Property: an image
    made of K tiles gives, per tile, the pre-trained model's features of that tile.
    """
    ids = _tile_token_ids(old_grid, new_grid)
    groups, old_tokens = ids.shape
    hidden = w1.shape[1]
    new_w1 = np.zeros((groups * old_tokens, groups * hidden), w1.dtype)
    new_w2 = np.zeros((groups * hidden, groups * old_tokens), w2.dtype)
    new_b2 = np.zeros((groups * old_tokens,), b2.dtype)
    for g, tokens in enumerate(ids):
        units = slice(g * hidden, (g + 1) * hidden)
        new_w1[tokens, units] = w1
        new_w2[units, tokens] = w2
        new_b2[tokens] = b2
    return new_w1, np.tile(b1, groups), new_w2, new_b2


def interpolate(w1, b1, w2, b2, old_grid, new_grid):
    """Not from the official release: bilinear resampling of the token axis over the 2-D patch grid (antialiased
    when shrinking). W1 is rescaled by S_old/S_new so a smooth input gives the same hidden pre-activations."""
    from keras import ops

    def resample(tokens_first):  # [S_old, X] -> [S_new, X]
        grid = tokens_first.reshape(*old_grid, -1)
        resized = ops.image.resize(grid, new_grid, interpolation="bilinear", antialias=True, data_format="channels_last")
        return np.asarray(ops.convert_to_numpy(resized), tokens_first.dtype).reshape(-1, tokens_first.shape[-1])

    scale = (old_grid[0] * old_grid[1]) / (new_grid[0] * new_grid[1])
    return resample(w1) * scale, b1, resample(w2.T).T, resample(b2[:, None])[:, 0]


RESIZE_METHODS = {"block_diagonal": block_diagonal, "interpolate": interpolate}
