"""Quantization-aware training (QAT) for Keras 3 models built from keras_mixer layers."""

from keras_mixer.quantization.qat import calibrate, is_quantized, quantize_model, strip_quantization
