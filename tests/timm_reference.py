"""timm models with random weights as the independent reference, and the official .npz layout written from the
mapping table of the official release (kernel layouts: conv HWIO, dense (in, out); norms `scale`)."""

import functools

import timm
import torch
from timm.models.mlp_mixer import MlpMixer


def timm_mixer(name=None, act="exact", seed=0, **kwargs):
    """A timm MlpMixer (registered `name`, or built from kwargs) with every parameter randomized, norms off 1/0."""
    act_layer = functools.partial(torch.nn.GELU, approximate="tanh") if act == "tanh" else torch.nn.GELU
    torch.manual_seed(seed)
    if name:
        model = timm.create_model(name, pretrained=False, act_layer=act_layer, **kwargs)
    else:
        model = MlpMixer(act_layer=act_layer, **kwargs)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def timm_logits(model, images_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


def to_official_npz_layout(state_dict):
    out = {}
    for key, tensor in state_dict.items():
        value = tensor.numpy()
        parts = key.split(".")
        if parts[0] == "stem":
            out["stem/" + ("kernel" if parts[-1] == "weight" else "bias")] = (
                value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
            )
        elif parts[0] == "blocks":
            i, module = parts[1], ".".join(parts[2:-1])
            name = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_1", "mlp_tokens.fc1": "token_mixing/Dense_0",
                    "mlp_tokens.fc2": "token_mixing/Dense_1", "mlp_channels.fc1": "channel_mixing/Dense_0",
                    "mlp_channels.fc2": "channel_mixing/Dense_1"}[module]
            is_norm = module.startswith("norm")
            leaf = "bias" if parts[-1] == "bias" else ("scale" if is_norm else "kernel")
            out[f"MixerBlock_{i}/{name}/{leaf}"] = value.T if leaf == "kernel" else value
        elif parts[0] == "norm":
            out["pre_head_layer_norm/" + ("scale" if parts[-1] == "weight" else "bias")] = value
        elif parts[0] == "head":
            out["head/" + ("kernel" if parts[-1] == "weight" else "bias")] = value.T if value.ndim == 2 else value
    return out
