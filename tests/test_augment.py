"""RandAugment's ops (big_vision's `randaug`, the official Mixer recipe) each on a known image against NumPy / PIL
written from the op's definition, the per-example draws, and the stateless mixup / cutmix."""

import numpy as np
import pytest
from PIL import Image, ImageOps

tf = pytest.importorskip("tensorflow")

from keras_mixer.training import augment  # noqa: E402


def known_image(height=12, width=10, seed=0):
    """A uint8 image whose channels differ and whose values span most of 0..255."""
    return np.random.default_rng(seed).integers(10, 240, (height, width, 3)).astype("uint8")


def run(op, image, *args):
    return np.asarray(op(tf, tf.constant(image), *args))


def shifted(image, rows=0, cols=0):
    """out[y, x] = image[y + rows, x + cols], grey where that falls outside (what translate computes)."""
    out = np.full_like(image, augment.REPLACE)
    height, width = image.shape[:2]
    for y in range(height):
        for x in range(width):
            if 0 <= y + rows < height and 0 <= x + cols < width:
                out[y, x] = image[y + rows, x + cols]
    return out


def test_pixel_ops_match_their_definitions():
    image = known_image()
    np.testing.assert_array_equal(run(augment.invert, image), 255 - image)
    np.testing.assert_array_equal(run(augment.posterize, image, tf.constant(6, tf.uint8)), image & 0b11111100)
    np.testing.assert_array_equal(run(augment.solarize, image, 128), np.where(image < 128, image, 255 - image))
    np.testing.assert_array_equal(run(augment.solarize, image, 384), image)  # magnitude 15's threshold: no change
    added = np.clip(image.astype(int) + 110, 0, 255).astype("uint8")
    np.testing.assert_array_equal(run(augment.solarize_add, image, 110), np.where(image < 128, added, image))
    np.testing.assert_array_equal(run(augment.brightness, image, 2.8),
                                  np.clip(image * np.float32(2.8), 0, 255).astype("uint8"))


def test_autocontrast_and_equalize_are_pils():
    image = known_image(32, 32)
    # PIL rounds its lookup table where TF's code truncates (255 · (1 - ε) -> 254): within one level, and every
    # channel stretched from 0
    got = run(augment.autocontrast, image).astype(int)
    assert np.abs(got - np.asarray(ImageOps.autocontrast(Image.fromarray(image))).astype(int)).max() <= 1
    assert (got.min(axis=(0, 1)) == 0).all() and (got.max(axis=(0, 1)) >= 254).all()
    np.testing.assert_array_equal(run(augment.equalize, image), np.asarray(ImageOps.equalize(Image.fromarray(image))))
    flat = np.full((8, 8, 3), 77, "uint8")  # a constant channel is left as it is
    np.testing.assert_array_equal(run(augment.autocontrast, flat), flat)
    np.testing.assert_array_equal(run(augment.equalize, flat), flat)


def test_enhancements_blend_with_their_degenerate_image():
    image = known_image()
    grey = np.asarray(tf.image.rgb_to_grayscale(image))
    blend = lambda degenerate, factor: np.clip(  # noqa: E731
        degenerate.astype(np.float32) + np.float32(factor) * (image.astype(np.float32) - degenerate), 0, 255
    ).astype("uint8")
    np.testing.assert_array_equal(run(augment.color, image, 2.8), blend(np.repeat(grey, 3, -1), 2.8))
    # big_vision's contrast blends with pixel count / 256 (here 120 / 256), not the mean grey level: kept as trained
    np.testing.assert_array_equal(run(augment.contrast, image, 2.8), blend(np.full_like(image, 0), 2.8))
    smooth = image.astype(np.float32).copy()
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
    for y in range(1, image.shape[0] - 1):
        for x in range(1, image.shape[1] - 1):
            smooth[y, x] = np.einsum("ijc,ij->c", image[y - 1:y + 2, x - 1:x + 2].astype(np.float32), kernel)
    got = run(augment.sharpness, image, 2.8).astype(int)
    assert np.abs(got - blend(np.clip(smooth, 0, 255).astype("uint8"), 2.8).astype(int)).max() <= 1  # float sums
    np.testing.assert_array_equal(got[0], image[0])  # the border keeps its pixels


def test_geometric_ops_move_pixels_and_fill_grey():
    image = known_image()
    np.testing.assert_array_equal(run(augment.translate_x, image, 3.0), shifted(image, cols=3))
    np.testing.assert_array_equal(run(augment.translate_y, image, -4.0), shifted(image, rows=-4))
    np.testing.assert_array_equal(run(augment.translate_x, image, 150.0), np.full_like(image, augment.REPLACE))
    square = known_image(9, 9)
    np.testing.assert_array_equal(run(augment.rotate, square, 90.0), np.rot90(square, 1))  # counter-clockwise
    np.testing.assert_array_equal(run(augment.rotate, square, 0.0), square)
    sheared = run(augment.shear_x, image, 0.5)  # out[y, x] = in[y, x + 0.5 y], nearest
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            source = int(np.floor(x + 0.5 * y + 0.5))
            expected = image[y, source] if source < image.shape[1] else augment.REPLACE
            np.testing.assert_array_equal(sheared[y, x], expected)
    np.testing.assert_array_equal(run(augment.shear_y, image, 0.0), image)


def test_cutout_greys_a_square_clipped_to_the_image():
    image = known_image(20, 20)
    got = run(augment.cutout, image, 4, tf.constant([2, 10]))
    box = np.zeros((20, 20), bool)
    box[0:6, 6:14] = True
    np.testing.assert_array_equal(got[box], np.full((box.sum(), 3), augment.REPLACE, "uint8"))
    np.testing.assert_array_equal(got[~box], image[~box])


def test_randaugment_draws_from_the_seed_alone():
    image = tf.constant(known_image(32, 32).astype("float32"))
    first = augment.randaugment(image, 2, 15, tf.constant([0, 7], tf.int64))
    np.testing.assert_array_equal(first, augment.randaugment(image, 2, 15, tf.constant([0, 7], tf.int64)))
    outputs = [np.asarray(augment.randaugment(image, 1, 15, tf.constant([0, i], tf.int64))) for i in range(80)]
    distinct = {output.tobytes() for output in outputs}
    # 16 ops, one of which (Solarize at magnitude 15) changes nothing; the translations' and shears' two signs and
    # cutout's positions add more: 80 draws find well over 10 different results
    assert len(distinct) > 10
    assert all(output.dtype == np.float32 and output.shape == (32, 32, 3) for output in outputs)


@pytest.mark.parametrize("num_ops, magnitude", [(2, 20), (2, -1), (1.5, 10)])
def test_randaugment_refuses_settings_outside_its_scale(num_ops, magnitude):
    from keras_mixer.errors import TrainingError

    with pytest.raises(TrainingError, match="randaugment"):
        augment.randaugment(tf.zeros((8, 8, 3)), num_ops, magnitude, tf.constant([0, 1], tf.int64))


def test_mixup_and_cutmix_keep_label_mass_and_match_the_pixels():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (4, 16, 16, 3)).astype("float32"))
    labels = tf.one_hot([0, 1, 2, 3], 4)
    seed = tf.constant([0, 3], tf.int64)
    mixed, mixed_labels = augment.mixup(images, labels, 0.5, seed)
    ratio = float(mixed_labels[0, 0])
    np.testing.assert_allclose(mixed, ratio * images + (1 - ratio) * np.roll(images, 1, axis=0), rtol=1e-6)
    cut, cut_labels = augment.cutmix(images, labels, 1.0, seed)
    pasted = np.mean(np.all(np.asarray(cut[0]) == np.asarray(images[3]), axis=-1))  # row 0 takes from row 3
    np.testing.assert_allclose(float(cut_labels[0, 3]), pasted, atol=1e-6)
    np.testing.assert_allclose(np.sum(cut_labels, axis=1), 1.0, rtol=1e-6)
    mix = augment.batch_mixer(0.5, 1.0, seed=0)
    first = mix(images, labels, tf.constant(5, tf.int64))
    np.testing.assert_array_equal(first[0], mix(images, labels, tf.constant(5, tf.int64))[0])
