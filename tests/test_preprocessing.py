import numpy as np
import pytest

import keras_mixer
from keras_mixer.errors import KerasMixerError


def test_preprocess_input_maps_pixels_to_minus_one_one():
    x = np.array([[0, 127.5, 255]])
    np.testing.assert_allclose(keras_mixer.preprocess_input(x), [[-1.0, 0.0, 1.0]])
    np.testing.assert_allclose(keras_mixer.preprocess_input(np.uint8([0, 255])), [-1.0, 1.0])


def test_imagenet1k_labels_are_the_standard_order():
    labels = keras_mixer.imagenet_labels(1000)
    assert len(labels) == 1000 and len({s for s, _ in labels}) == 1000
    # well-known ImageNet-1k indices (Keras' imagenet_class_index.json): 0 tench, 281 tabby, 999 toilet tissue
    assert labels[0] == ("n01440764", "tench, Tinca tinca")
    assert labels[281][0] == "n02123045" and labels[281][1].startswith("tabby")
    assert labels[999][0] == "n15075141"


def test_imagenet21k_labels():
    labels = keras_mixer.imagenet_labels(21843)
    assert len(labels) == 21843 and len({s for s, _ in labels}) == 21843
    assert labels[0][0] == "n00004475"  # 'organism, being', first of Google's 21k synset order
    assert all(s.startswith("n") and name for s, name in labels)


def test_decode_predictions():
    preds = np.zeros((2, 1000), "float32")
    preds[0, 281], preds[0, 0] = 0.9, 0.1
    preds[1, 999] = 1.0
    decoded = keras_mixer.decode_predictions(preds, top=2)
    assert decoded[0] == [("n02123045", "tabby", pytest.approx(0.9)), ("n01440764", "tench", pytest.approx(0.1))]
    assert decoded[1][0][:2] == ("n15075141", "toilet_tissue")  # as Keras writes it
    assert len(keras_mixer.decode_predictions(np.zeros((1, 21843)), top=3)[0]) == 3


def test_decode_predictions_rejects_unknown_head_size():
    with pytest.raises(KerasMixerError, match="10-class"):
        keras_mixer.decode_predictions(np.zeros((1, 10)))
    with pytest.raises(KerasMixerError, match="shape"):
        keras_mixer.decode_predictions(np.zeros(1000))
