"""RandAugment and mixup / cutmix for tf.data, per example (or per batch) and stateless: every random draw is a
function of the example's seed, so the augmented stream is a pure function of (seed, position) and an interrupted
run resumes exactly (`make_pipeline(skip_batches=...)`).

RandAugment is the official Mixer recipe's, `randaug(2, 15)` in big_vision's ImageNet config: big_vision's op set
and magnitude scale (its `pp/archive/autoaugment.py`, TF's EfficientNet AutoAugment code): each of `num_ops` layers
picks one of 16 ops uniformly and applies it at `magnitude` on a 0..10 scale that extrapolates above 10 (at 15:
rotations of ±45°, shears of ±0.45, translations of ±150 px, a 120 px cutout, enhancement factors of 2.8, posterize
to 6 bits; Solarize's threshold passes 255, so it leaves the image as it is, as in the original). Ops work on uint8
pixels as the original does (the float crop is truncated to uint8 first); geometric ops sample nearest pixels and
fill with grey 128. Mixup draws its ratio from Beta(α, α) (big_vision's `p`) and mixes each batch with itself rolled
by one; cutmix pastes a box of area 1 - λ, λ ~ Beta(α, α), from the rolled batch, labels weighted by the box's
actual area (timm's); with both, each batch gets one or the other with probability 1/2, as timm does.
"""

import math

from keras_mixer.errors import TrainingError

MAX_LEVEL = 10.0  # the magnitude scale's nominal top; big_vision's recipe uses 15, which extrapolates
REPLACE = 128  # grey: what geometric ops and cutout fill empty pixels with
TRANSLATE_CONST, CUTOUT_CONST = 100.0, 40.0  # big_vision's randaug hyperparameters (pixels at level 10)
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
       "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")


def _tf():
    import tensorflow as tf

    return tf


def _blend(tf, image1, image2, factor):
    """image1 + factor · (image2 - image1) in float, clipped to [0, 255] when extrapolating, truncated to uint8."""
    mixed = tf.cast(image1, tf.float32) + factor * (tf.cast(image2, tf.float32) - tf.cast(image1, tf.float32))
    return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _transform(tf, image, matrix):
    """An affine map of output pixel (x, y) to input pixel, nearest sampling, grey outside (tfa.image.transform)."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.cast(tf.reshape(matrix, (1, 8)), tf.float32),
        output_shape=tf.shape(image)[:2], fill_value=float(REPLACE), interpolation="NEAREST",
        fill_mode="CONSTANT")[0]


def autocontrast(tf, image):
    """Each channel stretched to 0..255 (a constant channel is left as it is)."""
    low = tf.cast(tf.reduce_min(image, axis=(0, 1)), tf.float32)
    high = tf.cast(tf.reduce_max(image, axis=(0, 1)), tf.float32)
    scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1e-12), 1.0)
    offset = tf.where(high > low, -low * scale, 0.0)
    return tf.cast(tf.clip_by_value(tf.cast(image, tf.float32) * scale + offset, 0.0, 255.0), tf.uint8)


def equalize(tf, image):
    """PIL's Equalize per channel: a lookup table from the cumulative histogram."""
    channels = []
    for c in range(3):
        values = tf.cast(image[:, :, c], tf.int32)
        histogram = tf.math.bincount(values, minlength=256, maxlength=256)
        last = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0)[:, 0]))  # the top nonzero bin
        step = (tf.reduce_sum(histogram) - last) // 255
        table = tf.concat([[0], (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)], 0)[:256]
        channels.append(tf.where(step == 0, values, tf.gather(tf.clip_by_value(table, 0, 255), values)))
    return tf.cast(tf.stack(channels, 2), tf.uint8)


def invert(tf, image):
    return 255 - image


def posterize(tf, image, bits):
    shift = 8 - bits
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(tf, image, threshold):
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(tf, image, addition, threshold=128):
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(image < threshold, added, image)


def color(tf, image, factor):
    return _blend(tf, tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)), image, factor)


def contrast(tf, image, factor):
    """Blend with a constant grey: big_vision's (TF AutoAugment's) "mean" is the pixel count / 256, not the mean grey
    level (a known quirk of that code), kept so that the recipe is the one the Mixer was trained with."""
    histogram = tf.histogram_fixed_width(tf.cast(tf.image.rgb_to_grayscale(image), tf.int32), [0, 255], nbins=256)
    mean = tf.reduce_sum(tf.cast(histogram, tf.float32)) / 256.0
    degenerate = tf.cast(tf.fill(tf.shape(image), tf.clip_by_value(mean, 0.0, 255.0)), tf.uint8)
    return _blend(tf, degenerate, image, factor)


def brightness(tf, image, factor):
    return _blend(tf, tf.zeros_like(image), image, factor)


def sharpness(tf, image, factor):
    """Blend with the image smoothed by PIL's 3x3 kernel (border pixels kept)."""
    kernel = tf.tile(tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32)[:, :, None, None] / 13.0, (1, 1, 3, 1))
    smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, (1, 1, 1, 1), "VALID")[0]
    smooth = tf.pad(tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8), ((1, 1), (1, 1), (0, 0)))
    inside = tf.pad(tf.ones_like(smooth[1:-1, 1:-1]), ((1, 1), (1, 1), (0, 0)))
    return _blend(tf, tf.where(inside == 1, smooth, image), image, factor)


def rotate(tf, image, degrees):
    """Rotation about the centre (tfa.image.rotate's matrix), positive degrees counter-clockwise on screen."""
    height, width = (tf.cast(tf.shape(image)[i], tf.float32) - 1.0 for i in (0, 1))
    radians = degrees * math.pi / 180.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return _transform(tf, image, tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]))


def shear_x(tf, image, level):
    return _transform(tf, image, tf.stack([1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


def shear_y(tf, image, level):
    return _transform(tf, image, tf.stack([1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0]))


def translate_x(tf, image, pixels):
    """Content moves left by `pixels` (output x reads input x + pixels), as the original's translate_x."""
    return _transform(tf, image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0]))


def translate_y(tf, image, pixels):
    return _transform(tf, image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0]))


def cutout(tf, image, pad_size, center):
    """A grey square of side up to 2·pad_size centred at `center` (row, column), clipped to the image."""
    rows, cols = tf.range(tf.shape(image)[0]), tf.range(tf.shape(image)[1])
    inside_rows = (rows >= center[0] - pad_size) & (rows < center[0] + pad_size)
    inside_cols = (cols >= center[1] - pad_size) & (cols < center[1] + pad_size)
    inside = inside_rows[:, None] & inside_cols[None, :]
    return tf.where(inside[:, :, None], tf.constant(REPLACE, tf.uint8), image)


def randaugment(image, num_ops, magnitude, seed):
    """big_vision's `randaug(num_ops, magnitude)` on one [H, W, 3] image (float32 in [0, 255] or uint8), every draw
    from the stateless `seed` (a [2] int tensor). Returns float32 in [0, 255]."""
    if not (int(num_ops) == num_ops >= 0 and 0 <= magnitude < 20):
        # at 20 Posterize would keep 8 bits and shift by a negative amount: nothing the recipe means
        raise TrainingError(f"randaugment=({num_ops}, {magnitude}): needs a whole number of ops >= 0 and a magnitude "
                            "in [0, 20) (the official recipe: (2, 15))")
    tf = _tf()
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8) if image.dtype != tf.uint8 else image
    level = magnitude / MAX_LEVEL
    enhance = level * 1.8 + 0.1
    for layer in range(num_ops):
        layer_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), layer)
        draws = tf.random.stateless_uniform((4,), layer_seed)  # op, sign, cutout row, cutout column
        op = tf.minimum(tf.cast(draws[0] * len(OPS), tf.int32), len(OPS) - 1)
        sign = tf.where(draws[1] < 0.5, -1.0, 1.0)  # rotations, shears and translations go either way
        center = tf.cast(draws[2:] * tf.cast(tf.shape(image)[:2], tf.float32), tf.int32)
        branches = {
            "AutoContrast": lambda x: autocontrast(tf, x),
            "Equalize": lambda x: equalize(tf, x),
            "Invert": lambda x: invert(tf, x),
            "Rotate": lambda x: rotate(tf, x, sign * level * 30.0),
            "Posterize": lambda x: posterize(tf, x, tf.cast(int(level * 4), tf.uint8)),
            "Solarize": lambda x: solarize(tf, x, int(level * 256)),
            "Color": lambda x: color(tf, x, enhance),
            "Contrast": lambda x: contrast(tf, x, enhance),
            "Brightness": lambda x: brightness(tf, x, enhance),
            "Sharpness": lambda x: sharpness(tf, x, enhance),
            "ShearX": lambda x: shear_x(tf, x, sign * level * 0.3),
            "ShearY": lambda x: shear_y(tf, x, sign * level * 0.3),
            "TranslateX": lambda x: translate_x(tf, x, sign * level * TRANSLATE_CONST),
            "TranslateY": lambda x: translate_y(tf, x, sign * level * TRANSLATE_CONST),
            "Cutout": lambda x: cutout(tf, x, int(level * CUTOUT_CONST), center),
            "SolarizeAdd": lambda x: solarize_add(tf, x, int(level * 110)),
        }
        image = tf.switch_case(op, [lambda fn=branches[name]: fn(image) for name in OPS])
        image = tf.ensure_shape(image, (None, None, 3))
    return tf.cast(image, tf.float32)


def _beta(tf, alpha, seed):
    """One draw of Beta(alpha, alpha) from a stateless seed (the ratio of two gammas)."""
    gammas = tf.random.stateless_gamma((2,), seed, alpha=alpha)
    return gammas[0] / tf.maximum(gammas[0] + gammas[1], 1e-12)


def mixup(images, labels, alpha, seed):
    """The batch mixed with itself rolled by one, ratio λ ~ Beta(α, α): λ·x + (1 - λ)·roll(x)."""
    tf = _tf()
    ratio = _beta(tf, alpha, seed)
    return (ratio * images + (1 - ratio) * tf.roll(images, 1, axis=0),
            ratio * labels + (1 - ratio) * tf.roll(labels, 1, axis=0))


def cutmix(images, labels, alpha, seed):
    """A box of area (1 - λ), λ ~ Beta(α, α), pasted from the batch rolled by one; labels by the box's actual area."""
    tf = _tf()
    ratio = _beta(tf, alpha, seed)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    side = tf.sqrt(1.0 - ratio)
    box_h = tf.cast(side * tf.cast(height, tf.float32), tf.int32)
    box_w = tf.cast(side * tf.cast(width, tf.float32), tf.int32)
    center = tf.random.stateless_uniform((2,), tf.random.experimental.stateless_fold_in(seed, 1))
    center_y = tf.cast(center[0] * tf.cast(height, tf.float32), tf.int32)
    center_x = tf.cast(center[1] * tf.cast(width, tf.float32), tf.int32)
    top, bottom = tf.maximum(center_y - box_h // 2, 0), tf.minimum(center_y + box_h // 2, height)
    left, right = tf.maximum(center_x - box_w // 2, 0), tf.minimum(center_x + box_w // 2, width)
    rows, cols = tf.range(height), tf.range(width)
    box = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    mixed = tf.where(box[None, :, :, None], tf.roll(images, 1, axis=0), images)
    kept = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / tf.cast(height * width, tf.float32)
    return mixed, kept * labels + (1.0 - kept) * tf.roll(labels, 1, axis=0)


def batch_mixer(mixup_alpha, cutmix_alpha, seed):
    """A function (images, labels, batch index) -> mixed batch for the recipe's mixup and / or cutmix, or None."""
    if not (mixup_alpha or cutmix_alpha):
        return None
    tf = _tf()

    def mix(images, labels, index):
        batch_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
        mixed_up = (lambda: mixup(images, labels, mixup_alpha, batch_seed)) if mixup_alpha else None
        cut = (lambda: cutmix(images, labels, cutmix_alpha, batch_seed)) if cutmix_alpha else None
        if mixed_up and cut:
            choice = tf.random.stateless_uniform((), tf.random.experimental.stateless_fold_in(batch_seed, 2))
            return tf.cond(choice < 0.5, mixed_up, cut)
        return (mixed_up or cut)()

    return mix
