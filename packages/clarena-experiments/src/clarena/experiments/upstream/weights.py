"""torchvision weight names (``IMAGENET1K_V1``) as the same weights for clarena's ResNets.

Upstream CLArena's ResNet configs name torchvision's weight enums. timm publishes those exact
tensors under ``.tv_in1k`` (V1) and ``.tv2_in1k`` (V2) tags, with torchvision's parameter names,
which are clarena's too. A torchvision file already in the local torch hub cache
(``<torch hub dir>/checkpoints/resnet18-f37072fd.pth`` ...) is used as it is, offline; otherwise
the timm tag is used, which needs the network or a Hugging Face cache.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from clarena.experiments.errors import PipelineConfigError

#: (ResNet depth, torchvision weight name) -> (timm tag, torchvision's checkpoint file name).
TORCHVISION_WEIGHTS: dict[tuple[int, str], tuple[str, str]] = {
    (18, "IMAGENET1K_V1"): ("resnet18.tv_in1k", "resnet18-f37072fd.pth"),
    (34, "IMAGENET1K_V1"): ("resnet34.tv_in1k", "resnet34-b627a593.pth"),
    (50, "IMAGENET1K_V1"): ("resnet50.tv_in1k", "resnet50-0676ba61.pth"),
    (50, "IMAGENET1K_V2"): ("resnet50.tv2_in1k", "resnet50-11ad3fa6.pth"),
    (101, "IMAGENET1K_V1"): ("resnet101.tv_in1k", "resnet101-63fe2227.pth"),
    (101, "IMAGENET1K_V2"): ("resnet101.tv2_in1k", "resnet101-cd907fc2.pth"),
    (152, "IMAGENET1K_V1"): ("resnet152.tv_in1k", "resnet152-394f9c45.pth"),
    (152, "IMAGENET1K_V2"): ("resnet152.tv2_in1k", "resnet152-f82ba261.pth"),
}

#: torchvision's ``DEFAULT`` weights of each depth.
DEFAULT_WEIGHTS: dict[int, str] = {
    18: "IMAGENET1K_V1",
    34: "IMAGENET1K_V1",
    50: "IMAGENET1K_V2",
    101: "IMAGENET1K_V2",
    152: "IMAGENET1K_V2",
}

_NAME = re.compile(r"^(?:ResNet(\d+)_Weights\.)?(IMAGENET1K_V\d|DEFAULT)$")
_DEPTH = re.compile(r"ResNet(\d+)$")


def is_torchvision_name(value: object) -> bool:
    """Whether ``value`` is a torchvision weight name (``IMAGENET1K_V1``, ``DEFAULT`` ...)."""
    return isinstance(value, str) and _NAME.match(value) is not None


def resnet_depth(target: str) -> int | None:
    """The depth of a ResNet backbone target (``clarena.backbones.HATMaskResNet18`` -> 18)."""
    match = _DEPTH.search(target.rpartition(".")[2])
    if match is None:
        return None
    depth = int(match.group(1))
    return 50 if depth == 52 else depth  # ResNet52: the published docs' name of ResNet-50


def local_file(file_name: str) -> Path:
    """Where torchvision caches ``file_name`` (it is there only if torchvision fetched it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def clarena_weights(target: str, value: str, key: str) -> tuple[str, str]:
    """The ``pretrained_weights`` value clarena loads for torchvision's ``value``.

    Args:
        target: the backbone's ``_target_``.
        value: a torchvision weight name, optionally ``ResNet18_Weights.``-qualified.
        key: the config key, for messages.

    Returns:
        ``(pretrained_weights, how)``: the local torchvision file when it is cached, else the
        timm tag; ``how`` says which, for the notice.

    Raises:
        PipelineConfigError: not a ResNet, a depth that disagrees with the qualified name, or a
            name torchvision does not publish for that depth (the message names the timm tags).
    """
    match = _NAME.match(value)
    depth = resnet_depth(target)
    if match is None or depth is None:
        raise PipelineConfigError(
            f"{key}={value!r}: torchvision weight names apply to the ResNets only; "
            f"{target} is not one. Drop pretrained_weights."
        )
    named_depth, name = match.groups()
    if named_depth is not None and int(named_depth) != depth:
        raise PipelineConfigError(
            f"{key}={value!r}: those are ResNet-{named_depth} weights, but the backbone is "
            f"{target} (ResNet-{depth}). Use ResNet{depth}_Weights or change the backbone."
        )
    name = DEFAULT_WEIGHTS[depth] if name == "DEFAULT" else name
    if (depth, name) not in TORCHVISION_WEIGHTS:
        tags = [tag for (d, _), (tag, _) in TORCHVISION_WEIGHTS.items() if d == depth]
        raise PipelineConfigError(
            f"{key}={value!r}: torchvision publishes no {name} weights for ResNet-{depth}; the "
            f"torchvision weights of that depth are the timm tags {', '.join(tags)}."
        )
    tag, file_name = TORCHVISION_WEIGHTS[(depth, name)]
    cached = local_file(file_name)
    if cached.is_file():
        return str(cached), f"torchvision's cached file {cached} (the same tensors as {tag})"
    return tag, f"timm tag {tag} (the same tensors; needs the network or a Hugging Face cache)"
