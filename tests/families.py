"""The family harness's table: one row per model family, with a small config, its parameter counts at the released
sizes, where the authors released checkpoints a random checkpoint in their format and their forward pass written
from the paper's equations (the `*_reference.py` modules), and the two other small models the suite runs: one that
exercises every layer (exports, QAT, int8, the Edge TPU form) and the cheapest one with every block class (other
backends, which compile a training step each). `test_families.py` runs every row through the same checks, and the
export, Edge TPU, int8, QAT, backend and application tests take their models from the rows; adding a family is adding
a row and its reference.

A fresh Mixer's head is zero-initialized, so every logit is 0 and a graph that drops whole blocks would still
"match" (Sparse-MLP's experts once vanished so): tests comparing two graphs give the head and every norm values
(`with_nonzero_weights`)."""

import dataclasses
import typing

import keras
import numpy as np

import keras_mixer
from as_mlp_reference import as_mlp_forward, random_state_dict as as_mlp_state_dict
from hire_mlp_reference import hire_mlp_forward, random_state_dict as hire_mlp_state_dict
from mixer_reference import mixer_forward, random_params as mixer_params
from raft_mlp_reference import raft_mlp_forward, raft_mlp_state_dict
from reference_ops import authors_normalize
from vip_reference import vip_forward, vip_state_dict


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    builder: typing.Callable
    config: dict  # a small model's arguments
    image_size: int
    # trainable parameters at 224x224 with 1000 classes, from the authors' implementations (spec sheets)
    parameter_counts: dict
    checkpoint_format: str = ""  # "npz" (the Flax release) or "safetensors" (a PyTorch state dict); "" none released
    state_dict: typing.Callable = None  # rng -> a random checkpoint of the small config, in the authors' keys
    forward: typing.Callable = None  # (state, pixels uint8) -> logits, from the authors' normalization of the pixels
    # a checkpoint key given a wrong shape, that shape, and what the error names (our variable and both shapes)
    wrong_shape: tuple = ()
    missing_key: tuple = ()  # a key left out, and the variable the error names
    # a digits-sized model exercising every layer: Hire-MLP's shifted blocks (step > 0) and circular padding (a 5-row
    # map with pixel 3), ViP's transition and segment widths, RaftMLP's two embedding kernels and a non-square input
    small: typing.Callable = None
    tiny: typing.Callable = None  # the cheapest model with each of the family's block classes (logits out)
    maps_to_edgetpu: bool = True  # every layer has an Edge TPU form (Sparse-MLP's expert routing has none)

    def build(self, **options):
        return self.builder(**self.config, input_shape=(self.image_size, self.image_size, 3), classes=10,
                            **options)


MIXER = dict(patch_size=4, hidden_dim=8, num_blocks=2, tokens_mlp_dim=6, channels_mlp_dim=12)
AS_MLP = dict(embed_dim=8, depths=(1, 2, 1, 1))
HIRE_MLP = dict(layers=(1, 2, 3, 2), embed_dims=(8, 16, 24, 32), pixel=(4, 3, 3, 2), step_stride=(2, 2, 3, 2),
                step_dilation=(2, 2, 1, 1))
# a small ViP with a 2x downsample and a 1x1 width change: 32x32 input, patch 4 -> 8x8 grid, then 4x4
VIP = {"layers": (1, 2, 1), "embed_dims": (16, 32, 48), "transitions": (True, False, False),
       "segment_dim": (8, 4, 4), "mlp_ratios": (3, 3, 3), "patch_size": 4}
# a small RaftMLP: 32x32 input -> grids 8, 4, 2; the last level with 4 rafts and a single embedding kernel
RAFT_MLP = (
    {"depth": 1, "dim": 16, "patch_size": 4, "raft_size": 2, "embedding_kernels": (4, 8)},
    {"depth": 2, "dim": 24, "patch_size": 2, "raft_size": 2, "embedding_kernels": (2, 4)},
    {"depth": 1, "dim": 32, "patch_size": 2, "raft_size": 4, "embedding_kernels": (2,)},
)
SPARSE_MLP = {"patch_size": 8, "hidden_dim": 32, "num_blocks": 3, "tokens_mlp_dim": 16, "channels_mlp_dim": 64,
              "num_sparse_blocks": 2, "min_capacity": 1}


def _mixer_block_params(tokens, channels, tokens_mlp, channels_mlp):
    return (4 * channels + 2 * tokens * tokens_mlp + tokens_mlp + tokens + 2 * channels * channels_mlp + channels_mlp
            + channels)


def _expert_params(experts, dim, hidden):
    return dim * experts + experts * (2 * dim * hidden + hidden + dim)  # router + experts


def _sparse_mlp_params(hidden, blocks, tokens_mlp, channels_mlp, sparse, token_experts, tokens=196, classes=1000):
    """Sparse-MLP's parameters from its configuration (no released checkpoint to count): the spec's re-represented
    sizes S1 = 2S, C1 = C/2, top-k token and channel experts."""
    c, s1 = hidden, 2 * tokens
    c1 = c // 2
    sparse_block = (4 * c + (c * c1 + c1) + (tokens * s1 + s1) + (s1 * tokens + tokens) + (c1 * c + c)
                    + _expert_params(token_experts, s1, tokens_mlp) + _expert_params(4, c, channels_mlp))
    return (16 * 16 * 3 * c + c + (blocks - sparse) * _mixer_block_params(tokens, c, tokens_mlp, channels_mlp)
            + sparse * sparse_block + 2 * c + c * classes + classes)


FAMILIES = {family.name: family for family in [
    Family(
        "mlp_mixer", keras_mixer.MLPMixer, MIXER, 16,
        {"MixerS32": 19_104_624, "MixerS16": 18_528_264, "MixerS8": 20_646_504, "MixerB32": 60_293_428,
         "MixerB16": 59_880_472, "MixerL32": 206_939_264, "MixerL16": 208_196_168, "MixerH14": 432_350_952},
        "npz", lambda rng: mixer_params(rng, 4, 3, 8, 16, 6, 12, 2, 10),
        lambda state, pixels: mixer_forward(state, np.asarray(pixels, np.float64) / 127.5 - 1, patch=4,
                                            num_blocks=2, form="tanh"),
        ("MixerBlock_0/channel_mixing/Dense_0/kernel", (8, 13), r"'MixerBlock_0/channel_mixing/Dense_0/kernel'.*"
                                                                r"\(8, 13\).*\(8, 12\)"),
        ("MixerBlock_1/LayerNorm_1/bias", "MixerBlock_1/LayerNorm_1/bias"),
        small=lambda: keras_mixer.MLPMixer(4, 16, 2, 8, 32, input_shape=(16, 16, 3), classes=5),
        tiny=lambda: keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=5, gelu="exact",
                                          classifier_activation=None)),
    Family(
        "as_mlp", keras_mixer.ASMLP, AS_MLP, 32,
        {"ASMLPTiny": 28_282_696, "ASMLPSmall": 49_594_696, "ASMLPBase": 87_752_808},
        "safetensors", lambda rng: as_mlp_state_dict(rng, 8, AS_MLP["depths"], 10),
        lambda state, pixels: as_mlp_forward(state, authors_normalize(pixels), AS_MLP["depths"]),
        ("layers.0.blocks.0.axial_shift.conv1.weight", (8, 9, 1, 1),
         r"layers_0_blocks_0/axial_shift/conv1/kernel.*\(9, 8\).*\(8, 8\)"),
        ("layers.1.downsample.reduction.weight", "layers_1_downsample/reduction/kernel"),
        small=lambda: keras_mixer.ASMLP(8, (1, 1, 1, 1), input_shape=(32, 32, 3), classes=5),
        tiny=lambda: keras_mixer.ASMLP(8, (1, 1, 1, 1), input_shape=(32, 32, 3), classes=5,
                                       classifier_activation=None)),
    Family(
        "hire_mlp", keras_mixer.HireMLP, HIRE_MLP, 40,
        {"HireMLPTiny": 18_041_672, "HireMLPSmall": 33_113_848, "HireMLPBase": 58_226_856,
         "HireMLPLarge": 95_723_944},
        "safetensors", lambda rng: hire_mlp_state_dict(rng, HIRE_MLP["layers"], HIRE_MLP["embed_dims"],
                                                       HIRE_MLP["pixel"], 10),
        # 40x40: stage grids 10, 5, 3, 2 exercise circular padding (10 -> 12, 5 -> 6), and the stem's zero padding
        # after the authors' normalization
        lambda state, pixels: hire_mlp_forward(state, authors_normalize(pixels), HIRE_MLP["layers"],
                                               HIRE_MLP["pixel"], HIRE_MLP["step_stride"], HIRE_MLP["step_dilation"]),
        ("network.0.0.mlp.fc1.weight", (31, 8, 1, 1), r"network_0_0/mlp/Dense_0/kernel.*\(8, 31\).*\(8, 32\)"),
        ("network.2.1.attn.mlp_w2.bias", "network_2_1/attn/mlp_w2/bias"),
        small=lambda: keras_mixer.HireMLP((1, 2, 1, 1), (16, 32, 32, 64), input_shape=(80, 80, 3), classes=5),
        tiny=lambda: keras_mixer.HireMLP((1, 1, 1, 1), (8, 16, 24, 32), input_shape=(32, 32, 3), classes=5,
                                         classifier_activation=None)),
    Family(
        "vip", keras_mixer.VisionPermutator, VIP, 32,
        {"VisionPermutatorSmall14": 29_892_904, "VisionPermutatorSmall7": 25_114_984,
         "VisionPermutatorMedium7": 55_272_488, "VisionPermutatorLarge7": 87_784_936},
        "safetensors", lambda rng: vip_state_dict(rng, VIP["layers"], VIP["embed_dims"], VIP["transitions"], 4, 10),
        lambda state, pixels: vip_forward(state, authors_normalize(pixels), VIP["layers"], VIP["embed_dims"],
                                          VIP["segment_dim"], VIP["transitions"], 4),
        ("network.0.0.attn.mlp_h.weight", (16, 15), r"network_0_0/attn/mlp_h/kernel.*\(15, 16\).*\(16, 16\)"),
        ("network.1.proj.bias", "network_1_proj/bias"),
        small=lambda: keras_mixer.VisionPermutator((1, 1, 1, 1), (16, 32, 32, 32), (True, False, False, False),
                                                   (8, 4, 4, 4), patch_size=4, input_shape=(32, 32, 3), classes=5),
        tiny=lambda: keras_mixer.VisionPermutator((1, 1), (8, 16), (True, False), (8, 4), (3, 3), patch_size=2,
                                                  input_shape=(16, 16, 3), classes=5, classifier_activation=None)),
    Family(
        "raft_mlp", keras_mixer.RaftMLP, {"layers": RAFT_MLP}, 32,
        {"RaftMLPSmall": 9_868_768, "RaftMLPMedium": 21_413_632, "RaftMLPLarge": 36_184_672},
        "safetensors", lambda rng: raft_mlp_state_dict(rng, RAFT_MLP, 32, 10),
        lambda state, pixels: raft_mlp_forward(state, authors_normalize(pixels), RAFT_MLP),
        ("levels.0.fn.2.1.fn.0.weight", (32, 15), r"levels_0_blocks_0/vertical_mlp/Dense_0/kernel.*\(15, 32\).*"
                                                  r"\(16, 32\)"),
        ("levels.2.fn.2.1.fn.0.bias", "levels_2_blocks_0/vertical_mlp/Dense_0/bias"),
        small=lambda: keras_mixer.RaftMLP(
            [dict(depth=1, dim=8, patch_size=4, raft_size=2, embedding_kernels=(4, 8)),
             dict(depth=1, dim=16, patch_size=2, raft_size=2, embedding_kernels=(2, 4))],
            input_shape=(32, 48, 3), classes=5),
        tiny=lambda: keras_mixer.RaftMLP(
            ({"depth": 1, "dim": 8, "patch_size": 4, "raft_size": 2, "embedding_kernels": (4, 8)},),
            input_shape=(16, 16, 3), classes=5, classifier_activation=None)),
    Family(
        "sparse_mlp", keras_mixer.SparseMLP, SPARSE_MLP, 32,
        {"SparseMLPSmall": _sparse_mlp_params(512, 8, 256, 2048, 2, 4),
         "SparseMLPBase": _sparse_mlp_params(768, 12, 384, 3072, 2, 8),
         "SparseMLPLarge": _sparse_mlp_params(1024, 24, 512, 4096, 4, 16)},
        small=lambda: keras_mixer.SparseMLP(4, 16, 3, 8, 32, num_sparse_blocks=2, min_capacity=1,
                                            input_shape=(16, 16, 3), classes=5),
        tiny=lambda: keras_mixer.SparseMLP(4, 8, 2, 6, 12, num_sparse_blocks=1, min_capacity=1,
                                           input_shape=(16, 16, 3), classes=5, classifier_activation=None),
        maps_to_edgetpu=False),
]}

SMALL = {family.name: family.small for family in FAMILIES.values()}
TINY = {family.name: family.tiny for family in FAMILIES.values()}
EDGETPU_MAPPABLE = [family.name for family in FAMILIES.values() if family.maps_to_edgetpu]


def outputs(model, x):
    """The model's inference outputs (a list of them for several) as NumPy: called, not `predict`, which traces a new
    function for each model it meets (on 360 digits images, 1.6 s of which 1.3 s tracing for a digits Mixer, 5.4 s of
    which 4.6 s for a Hire-MLP). For thousands of images through a wide model `predict`'s graph wins (Mixer-S/32 on
    1000 images: 2.8 s, eager 10 s)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))


def with_nonzero_weights(model, seed=1):
    """The head and every norm's affine / BatchNorm statistic set to random values (see the module doc)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if "head" in variable.path or name in ("bias", "beta", "moving_mean") and "norm" in variable.path:
            variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
        elif name in ("scale", "gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    return model
