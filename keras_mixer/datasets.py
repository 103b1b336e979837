"""Small offline datasets for the demo, tests and CI."""

import numpy as np

from keras_mixer.errors import KerasMixerError


def load_digits(image_size=32, test_fraction=0.2, seed=0):
    """sklearn's 8x8 handwritten digits (1,797 real scans, shipped with sklearn) as RGB images in [0, 255].

    Each image is upscaled bilinearly to `image_size` x `image_size` and repeated over 3 channels, so it feeds a Mixer
    exactly like a camera frame would. Returns ((x_train, y_train), (x_test, y_test)), a stratified split;
    x is float32 [N, image_size, image_size, 3], y int32 [N].
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise KerasMixerError("the digits dataset needs scikit-learn: pip install 'keras-mixer[demo]'") from error
    from keras import ops

    digits = sklearn_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)
    images = ops.convert_to_numpy(ops.image.resize(images, (image_size, image_size), interpolation="bilinear"))
    images = np.repeat(np.clip(images, 0.0, 255.0), 3, axis=-1)
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return (x_train, y_train), (x_test, y_test)
