"""Loading timm / torchvision ResNet weights into a clarena backbone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: Checkpoint keys that belong to a classifier, not to a backbone.
_CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def read_state_dict(source: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from a local file, or from timm when ``source`` is a pretrained tag.

    Local files may be ``torch.save`` pickles (a state dict, or a dict holding one under
    ``'state_dict'`` or ``'model'``) or ``.safetensors``. A ``module.`` prefix left by
    DataParallel/DDP is stripped.

    Raises:
        FileNotFoundError: ``source`` looks like a path but no file is there.
        RuntimeError: timm could not provide the tag (offline without a local cache).
    """
    path = Path(source)
    if path.is_file():
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model"):
                if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
                    loaded = loaded[key]
            state = loaded
        return {k.removeprefix("module."): v for k, v in state.items()}
    source = str(source)
    if os.sep in source or source.endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(
            f"pretrained_weights: no checkpoint file at '{source}'. Give an existing local "
            f"checkpoint path or a timm pretrained tag such as 'resnet18.a1_in1k'."
        )
    import timm

    try:
        model = timm.create_model(source, pretrained=True)
    except Exception as error:
        raise RuntimeError(
            f"pretrained_weights: timm could not load pretrained tag '{source}' ({error}). Tags "
            f"need the network or a local Hugging Face cache; offline, save the weights once with "
            f"torch.save(model.state_dict(), path) and pass that path."
        ) from error
    return model.state_dict()


def load_trunk_state_dict(backbone: nn.Module, source: str | os.PathLike[str]) -> None:
    """Load the trunk parameters of a ResNet checkpoint into ``backbone``, strictly.

    The checkpoint's classifier is ignored, and so are parameters the checkpoint cannot have:
    the ``proj`` projection and convolution biases added by ``bias=True`` (they keep their
    initial values).

    Raises:
        ValueError: a trunk parameter is missing from the checkpoint, the checkpoint holds
            parameters the backbone does not have, or a shape differs.
    """
    state = {
        k: v for k, v in read_state_dict(source).items() if not k.startswith(_CLASSIFIER_PREFIXES)
    }
    own = backbone.state_dict()
    optional = {k for k in own if k.startswith("proj.")} | {
        f"{name}.bias" for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d)
    }
    missing = sorted(k for k in own if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs backbone {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {_few(missing)}")
    if unexpected:
        problems.append(f"not in this backbone: {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape differs: {_few(mismatched)}")
    if problems:
        raise ValueError(
            f"pretrained_weights '{source}' does not fit {type(backbone).__name__} "
            f"({'; '.join(problems)}). Check the depth, small_input and batch_normalization "
            f"settings against the checkpoint."
        )
    backbone.load_state_dict(state, strict=False)


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
