"""The training recipe as reusable Keras objects: optimizer (weight decay on kernels only, global-norm clipping,
gradient accumulation), warmup + cosine/linear schedule, loss (label smoothing; softmax or sigmoid cross-entropy)
and the presets with the published Mixer hyper-parameters."""

import dataclasses
import math

import keras
from keras import ops

from keras_mixer.errors import TrainingError, is_number, is_whole_number
from keras_mixer.models.applications import output_activation


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every hyper-parameter of a run. `learning_rate` is tuned for a global batch of `batch_size`; other global
    batches scale it linearly unless told not to. Weight decay is decoupled and multiplied by the learning rate
    (Keras' AdamW/SGD and PyTorch's convention), applied to kernels only (rank >= 2), never to norms or biases."""

    optimizer: str = "adamw"  # "adamw" | "sgd" (momentum)
    learning_rate: float = 1e-3
    batch_size: int = 512
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD momentum, or Adam's beta_1
    warmup_steps: int = 0
    decay: str = "cosine"  # "cosine" | "linear", from the peak after warmup down to end_fraction * peak
    end_fraction: float = 0.0
    clip_global_norm: float = 1.0
    accumulation_steps: int = 1
    loss: str = "softmax"  # "softmax" cross-entropy | "sigmoid" (per-class binary, summed over classes)
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0  # with both set, each batch gets one of the two (timm's switch, p=0.5)
    randaugment: tuple = None  # (num_ops, magnitude on the 0..10 scale of TF's RandAugment), e.g. (2, 15)
    inception_crop: bool = True  # random-resized crop for training; False: resize only
    random_flip: bool = True
    # eval: the central square of this share of the short side, resized (None: the dataset's own, see
    # keras_mixer.datasets: 0.875 for tfds datasets as timm evaluates ImageNet, 1.0 for digits and image folders)
    eval_crop_fraction: float = None
    drop_path_rate: float = 0.0  # stochastic depth of the last block, rising linearly from 0 over the blocks
    dropout_rate: float = 0.0  # before the head

    def __post_init__(self):
        for name, (allowed, admits) in ALLOWED.items():
            value = getattr(self, name)
            if not admits(value):
                raise TrainingError(f"recipe field {name}={value!r}: must be {allowed}")

    def replace(self, **changes):
        unknown = set(changes) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise TrainingError(f"unknown recipe fields {sorted(unknown)}; known: {sorted(self.__dataclass_fields__)}")
        return dataclasses.replace(self, **changes)


# What each field takes (RandAugment's pair is checked where the pipeline builds it): a value outside would train
# something else without a word, as a negative warmup or a decay that rises. The command line's flags for these
# fields take the same ranges (tests/test_cli.py).
ALLOWED = {
    "optimizer": ("'adamw' or 'sgd'", lambda value: value in ("adamw", "sgd")),
    "learning_rate": ("a number > 0", lambda value: is_number(value) and value > 0),
    "batch_size": ("an integer >= 1", lambda value: is_whole_number(value) and value >= 1),
    "weight_decay": ("a number >= 0", lambda value: is_number(value) and value >= 0),
    "momentum": ("a number >= 0 and < 1", lambda value: is_number(value) and 0 <= value < 1),
    "warmup_steps": ("an integer >= 0", lambda value: is_whole_number(value) and value >= 0),
    "decay": ("'cosine' or 'linear'", lambda value: value in ("cosine", "linear")),
    "end_fraction": ("a number >= 0 and <= 1", lambda value: is_number(value) and 0 <= value <= 1),
    "clip_global_norm": ("a number >= 0 (0: no clipping)", lambda value: is_number(value) and value >= 0),
    "accumulation_steps": ("an integer >= 1", lambda value: is_whole_number(value) and value >= 1),
    "loss": ("'softmax' or 'sigmoid'", lambda value: value in ("softmax", "sigmoid")),
    "label_smoothing": ("a number >= 0 and < 1", lambda value: is_number(value) and 0 <= value < 1),
    "mixup_alpha": ("a number >= 0", lambda value: is_number(value) and value >= 0),
    "cutmix_alpha": ("a number >= 0", lambda value: is_number(value) and value >= 0),
    "inception_crop": ("True or False", lambda value: isinstance(value, bool)),
    "random_flip": ("True or False", lambda value: isinstance(value, bool)),
    "eval_crop_fraction": ("None or a number > 0 and <= 1", lambda value: value is None or (is_number(value) and
                                                                                             0 < value <= 1)),
    "drop_path_rate": ("a number >= 0 and < 1", lambda value: is_number(value) and 0 <= value < 1),
    "dropout_rate": ("a number >= 0 and < 1", lambda value: is_number(value) and 0 <= value < 1),
}


PRESETS = {
    # The official fine-tune (google-research/vision_transformer, configs/common.py + mixer_base16_cifar10.py):
    # SGD momentum 0.9, lr 0.03 at batch 512 (8 accumulation steps there), 500 warmup steps, cosine, clip 1.0,
    # softmax cross-entropy; no weight decay, label smoothing, mixup, RandAugment, stochastic depth or dropout.
    "finetune": Recipe(
        optimizer="sgd", learning_rate=0.03, batch_size=512, warmup_steps=500, decay="cosine",
        inception_crop=True, random_flip=True,
    ),
    # The official from-scratch ImageNet-1k recipe (big_vision configs/mlp_mixer_i1k.py, Mixer-B/16 76.3 % in 300
    # epochs): Adam lr 1e-3 at batch 4096, 10k warmup steps, linear decay to 1e-5 x peak, clip 1.0, sigmoid
    # cross-entropy (head bias -log(classes)), RandAugment(2, 15), mixup 0.5, stochastic depth 0.1.
    # big_vision's wd 1e-4 is scaled by the schedule but not by the base lr; Keras multiplies it by the lr,
    # so the same decay is weight_decay = 1e-4 / 1e-3 = 0.1 here.
    "scratch": Recipe(
        optimizer="adamw", learning_rate=1e-3, batch_size=4096, weight_decay=0.1, warmup_steps=10_000,
        decay="linear", end_fraction=1e-5, loss="sigmoid", randaugment=(2, 15), mixup_alpha=0.5,
        drop_path_rate=0.1,
    ),
    # Our small-data default (the digits demo and CI): AdamW + cosine, light regularization, no crops in
    # training or eval (32x32 digits have no room for them; an eval-only centre crop zooms the test digits).
    "digits": Recipe(
        optimizer="adamw", learning_rate=2e-3, batch_size=64, weight_decay=0.05, warmup_steps=40, decay="cosine",
        drop_path_rate=0.1, inception_crop=False, random_flip=False,
    ),
    # Quantization-aware fine-tuning of a trained model (`keras-mixer qat`): a short, low learning-rate adaptation
    # to the int8 rounding, without augmentation (as the digits demo's QAT).
    "qat": Recipe(
        optimizer="adamw", learning_rate=1e-4, batch_size=64, weight_decay=0.05, warmup_steps=0, decay="cosine",
        inception_crop=False, random_flip=False,
    ),
}


# the fields whose None means something: no RandAugment, the dataset's own evaluation crop
NULLABLE_FIELDS = ("randaugment", "eval_crop_fraction")


def get_recipe(recipe, **overrides):
    """A preset by name ("finetune", "scratch", "digits") or a Recipe, with fields replaced by `overrides`. None
    switches a NULLABLE_FIELDS field off (randaugment=None: no RandAugment); any other field needs a value."""
    if isinstance(recipe, str):
        if recipe not in PRESETS:
            raise TrainingError(f"unknown recipe {recipe!r}; presets: {', '.join(PRESETS)}")
        recipe = PRESETS[recipe]
    elif not isinstance(recipe, Recipe):  # a dict of fields was an AttributeError ('dict' has no 'replace')
        raise TrainingError(f"recipe must be a preset name ({', '.join(PRESETS)}) or a Recipe, got "
                            f"{type(recipe).__name__}: give fields as keyword arguments (learning_rate=1e-3, ...)")
    unset = sorted(key for key, value in overrides.items() if value is None and key not in NULLABLE_FIELDS)
    if unset:
        raise TrainingError(f"recipe field {unset[0]}=None: give it a value (None switches off only "
                            f"{' and '.join(NULLABLE_FIELDS)}; 0 switches off mixup, cutmix, smoothing, ...)")
    return recipe.replace(**overrides)


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then a decay (`shape` of the progress from 0 to 1) down to
    `end_fraction * peak` at `total_steps`.

    Warmup or decay is chosen with `ops.where`, on the device: Keras' CosineDecay chooses with `ops.cond`, which on
    torch is a Python `if` on the step counter, so on a GPU the host would wait for the device each time the
    optimizer reads its learning rate (twice per AdamW step)."""

    def __init__(self, peak, warmup_steps, total_steps, end_fraction=0.0):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.end_fraction = end_fraction

    def shape(self, progress):
        raise NotImplementedError

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = step / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        decay = self.end_fraction + (1.0 - self.end_fraction) * self.shape(progress)
        return self.peak * ops.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return dict(peak=self.peak, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                    end_fraction=self.end_fraction)


@keras.saving.register_keras_serializable(package="keras_mixer")
class WarmupLinearDecay(WarmupDecay):
    """big_vision's "linear" schedule."""

    def shape(self, progress):
        return 1.0 - progress


@keras.saving.register_keras_serializable(package="keras_mixer")
class WarmupCosineDecay(WarmupDecay):
    """The cosine schedule: Keras' `CosineDecay(0.0, total_steps - warmup_steps, alpha=end_fraction,
    warmup_target=peak, warmup_steps=warmup_steps)`, value for value (tested)."""

    def shape(self, progress):
        return 0.5 * (1.0 + ops.cos(math.pi * progress))


def peak_learning_rate(recipe, global_batch_size, scale_learning_rate=True):
    """The recipe's learning rate, scaled linearly to `global_batch_size` (Goyal et al.) unless told not to."""
    if not scale_learning_rate:
        return recipe.learning_rate
    return recipe.learning_rate * global_batch_size / recipe.batch_size


def make_schedule(recipe, total_steps, peak):
    warmup = min(recipe.warmup_steps, total_steps // 2)  # short runs still get a decay phase
    schedule = WarmupCosineDecay if recipe.decay == "cosine" else WarmupLinearDecay  # Recipe admits no other
    return schedule(peak, warmup, total_steps, recipe.end_fraction)


def make_optimizer(recipe, model, total_steps, global_batch_size, scale_learning_rate=True):
    """The recipe's optimizer for `model`, with its schedule over `total_steps` optimizer steps."""
    schedule = make_schedule(recipe, total_steps, peak_learning_rate(recipe, global_batch_size, scale_learning_rate))
    common = dict(
        learning_rate=schedule,
        weight_decay=recipe.weight_decay or None,
        global_clipnorm=recipe.clip_global_norm or None,
        gradient_accumulation_steps=recipe.accumulation_steps if recipe.accumulation_steps > 1 else None,
    )
    if recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(beta_1=recipe.momentum, **common)
    else:  # "sgd", the other one Recipe admits
        optimizer = keras.optimizers.SGD(momentum=recipe.momentum, **common)
    if recipe.weight_decay:
        # like timm and big_vision: decay weight matrices only, never norm scales/offsets or biases
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    return optimizer


@keras.saving.register_keras_serializable(package="keras_mixer")
class SigmoidCrossEntropy(keras.losses.Loss):
    """big_vision's `sigmoid_xent`: per-class binary cross-entropy on logits, summed over classes (Keras'
    BinaryCrossentropy averages over them, which would shrink gradients by the class count)."""

    def __init__(self, label_smoothing=0.0, from_logits=True, name="sigmoid_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        per_class = keras.losses.binary_crossentropy(
            y_true, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )
        return per_class * ops.cast(classes, per_class.dtype)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


def make_loss(recipe, model=None):
    """The recipe's loss on one-hot (possibly mixed) labels, taking the outputs `model` gives: logits, or the
    probabilities of a softmax / sigmoid head (a builder's default `classifier_activation`), which a from-logits
    loss would squash a second time. A head whose probabilities the loss cannot take is refused."""
    head = output_activation(model) if model is not None else None
    if head not in (None, recipe.loss):  # each loss takes the probabilities of the head of its own name
        raise TrainingError(f"model {model.name!r} ends in a {head} head, but the recipe's loss is {recipe.loss} "
                            f"cross-entropy: rebuild it with classifier_activation=None (logits) or {recipe.loss!r}")
    if recipe.loss == "softmax":
        return keras.losses.CategoricalCrossentropy(from_logits=head is None, label_smoothing=recipe.label_smoothing)
    return SigmoidCrossEntropy(label_smoothing=recipe.label_smoothing, from_logits=head is None)


def prepare_head(model, recipe):
    """Sigmoid cross-entropy starts from a head bias of -log(classes) (big_vision's -6.9 for 1000 classes), so
    the first steps do not push every class down at once."""
    head = model.get_layer("head") if any(layer.name == "head" for layer in model.layers) else None
    # the bias read as NumPy: JAX no longer takes a Keras Variable inside jnp.any
    if recipe.loss == "sigmoid" and head is not None and not ops.convert_to_numpy(head.bias).any():
        classes = head.bias.shape[0]
        head.bias.assign(ops.full((classes,), -float(ops.log(float(classes)))))


def compile_model(model, recipe, total_steps, global_batch_size, scale_learning_rate=True, **compile_kwargs):
    """Compiles `model` (logits or probabilities out: `make_loss`) with the recipe's optimizer, loss and top-1
    accuracy on one-hot labels.

    `jit_compile` stays Keras' "auto" unless given: measured on a 2-core CPU (Mixer-S/32, batch 32; the
    documentation's training benchmarks), that is the faster choice on every backend: TensorFlow without XLA (XLA
    was no faster; "auto" turns XLA on for GPUs and TPUs), torch eager (torch.compile 0.83x), JAX always compiled."""
    prepare_head(model, recipe)
    model.compile(
        optimizer=make_optimizer(recipe, model, total_steps, global_batch_size, scale_learning_rate),
        loss=make_loss(recipe, model),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        **compile_kwargs,
    )
    return model
