"""Training at scale: the Mixer recipes, tf.data/tfds pipelines, distribution strategies, resumable runs."""

from keras_mixer.training.callbacks import ResumableBackup, ResumableCSVLogger, plot_history, read_history
from keras_mixer.training.data import load_source, make_pipeline
from keras_mixer.training.distribute import (
    Distribution,
    choose_precision,
    connect_hosts,
    get_distribution,
    set_precision,
    under_global_policy,
)
from keras_mixer.training.feed import device_batches, fit_data, with_pixel_input
from keras_mixer.training.recipe import (
    PRESETS,
    Recipe,
    SigmoidCrossEntropy,
    WarmupCosineDecay,
    WarmupLinearDecay,
    compile_model,
    get_recipe,
    make_loss,
    make_optimizer,
    make_schedule,
)
from keras_mixer.training.trainer import evaluate, quantization_aware_training, train
