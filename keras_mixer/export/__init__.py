"""Export to TFLite / LiteRT, and running and evaluating exported models."""

from keras_mixer.export.evaluate import evaluate_tflite, plot_confusion_matrix, top_k_accuracy
from keras_mixer.export.metadata import add_metadata, read_labels, read_metadata
from keras_mixer.export.interpreter import dequantize, load_interpreter, op_counts, predict, quantize
from keras_mixer.export.plan import QUANTIZATION_MODES, ExportPlan, export_plan
from keras_mixer.export.tflite import to_tflite
