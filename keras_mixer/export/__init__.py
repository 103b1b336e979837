"""Export to TFLite / LiteRT and running exported models."""

from keras_mixer.export.interpreter import dequantize, load_interpreter, op_counts, predict, quantize
from keras_mixer.export.tflite import QUANTIZATION_MODES, to_tflite
