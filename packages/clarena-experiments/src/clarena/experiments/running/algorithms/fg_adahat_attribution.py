"""FG-AdaHAT's 10 attribution importance types, computed with captum (extra ``[captum]``).

Each method attributes the true-class logit ``f_y`` to the output ``z_l`` of each weighted
module (the ``Linear`` or ``Conv`` itself: before normalisation and mask) of the backbone, in the
train stage, with the current task and the annealed gate scale of the step (passed in as
``scale``). A unit's importance
is ``mean_{batch, spatial} |Phi|``. Baselines are zeros (``deepliftshap_abs``: two zero
examples, as captum needs a distribution); ``conductance_abs`` and ``integrated_gradients_abs``
take 50 steps, ``internal_influence_abs`` 5; ``gradcam_abs`` keeps one value per channel (summing
over the channels, as upstream did, would give every unit the same value); ``feature_ablation_abs``
ablates one unit (a whole channel of a conv) at a time.

The extra forwards must not change training: the batch-norm running statistics are restored
afterwards, dropout is off during them, every module's train / eval mode is put back, and captum
takes gradients with ``torch.autograd.grad``, so the parameters' ``.grad`` is untouched.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from clarena.experiments.running.algorithms.base import CLConfigError


class FGAdaHAT(Protocol):
    """What attribution reads of the FG-AdaHAT algorithm (its module imports this one)."""

    backbone: Any
    heads: Any
    task_id: int


#: type -> (captum class, takes an nn.Module rather than a function, attribute() arguments).
_METHODS: dict[str, tuple[str, bool, Callable[[Tensor], dict[str, Any]]]] = {
    "gradient_x_activation_abs": ("LayerGradientXActivation", False, lambda x: {}),
    "conductance_abs": (
        "LayerConductance",
        False,
        lambda x: {"baselines": torch.zeros_like(x), "n_steps": 50},
    ),
    "internal_influence_abs": (
        "InternalInfluence",
        False,
        lambda x: {"baselines": torch.zeros_like(x), "n_steps": 5},
    ),
    "gradcam_abs": ("LayerGradCam", False, lambda x: {"attr_dim_summation": False}),
    "deeplift_abs": ("LayerDeepLift", True, lambda x: {"baselines": torch.zeros_like(x)}),
    "deepliftshap_abs": (
        "LayerDeepLiftShap",
        True,
        lambda x: {"baselines": torch.zeros((2, *x.shape[1:]), dtype=x.dtype, device=x.device)},
    ),
    "gradientshap_abs": ("LayerGradientShap", False, lambda x: {"baselines": torch.zeros_like(x)}),
    "integrated_gradients_abs": (
        "LayerIntegratedGradients",
        False,
        lambda x: {"baselines": torch.zeros_like(x), "n_steps": 50},
    ),
    "feature_ablation_abs": ("LayerFeatureAblation", False, lambda x: {}),
    "lrp_abs": ("LayerLRP", True, lambda x: {}),
}


def require_captum(importance_type: str) -> None:
    """Raise :class:`CLConfigError` naming the extra when captum is not installed."""
    try:
        importlib.import_module("captum.attr")
    except ImportError:
        raise CLConfigError(
            f"FGAdaHAT: importance_type {importance_type!r} attributes with captum, which is "
            f"not installed. Install the extra: pip install 'clarena-experiments[captum]'."
        ) from None


class _TrainLogits(nn.Module):
    """The algorithm's train-stage forward of the current step, as a module returning logits."""

    def __init__(self, algorithm: FGAdaHAT, scale: float) -> None:
        super().__init__()
        # Registered, so that DeepLift and LRP find every layer of the network.
        self.backbone = algorithm.backbone
        self.heads = algorithm.heads
        self.task_id = algorithm.task_id
        self.scale = scale

    def forward(self, input: Tensor) -> Tensor:
        feature, _, _ = self.backbone(input, "train", scale=self.scale)
        return self.heads(feature, self.task_id)


def _feature_ablation_mask(layer: nn.Module, input: Tensor, model: nn.Module) -> Tensor | None:
    """Group a conv output's positions by channel, so each unit is ablated as a whole."""
    if not isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return None
    shape: list[torch.Size] = []
    handle = layer.register_forward_hook(lambda module, args, output: shape.append(output.shape))
    try:
        with torch.no_grad():
            model(input)  # the whole batch: batch norm trains; its statistics are restored
    finally:
        handle.remove()
    channels, *spatial = shape[0][1:]
    index = torch.arange(channels, device=input.device).view(1, channels, *[1] * len(spatial))
    return index.expand(1, channels, *spatial).contiguous()


def attribution_importance(
    algorithm: FGAdaHAT, importance_type: str, input: Tensor, target: Tensor, scale: float
) -> dict[str, Tensor]:
    """This step's attribution importance of every unit of every weighted layer.

    Args:
        algorithm: the FG-AdaHAT algorithm (backbone, heads, current task).
        importance_type: one of :data:`clarena.hat.ATTRIBUTION_IMPORTANCE_TYPES`.
        input: the step's training inputs ``(batch, ...)``.
        target: their task-local labels ``(batch,)``.
        scale: the gate scale of the step (the algorithm's ``step_scale``).

    Returns:
        Layer name → ``(units,)`` importance, detached.
    """
    require_captum(importance_type)
    attr = importlib.import_module("captum.attr")
    class_name, takes_module, arguments = _METHODS[importance_type]
    method_class = getattr(attr, class_name)
    model = _TrainLogits(algorithm, scale)
    modes = {module: module.training for module in model.modules()}
    statistics = {
        name: buffer.detach().clone()
        for name, buffer in model.named_buffers()
        if _owned_by_batch_norm(model, name)
    }
    result: dict[str, Tensor] = {}
    lrp_rules: list[tuple[nn.Module, Any]] = []
    try:
        if importance_type == "lrp_abs":
            lrp_rules = _lrp_rules(model, input.detach())
        for module in model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.eval()
        input = input.detach()
        for name in algorithm.backbone.weighted_layer_names:
            layer = algorithm.backbone.get_layer_by_name(name)
            method = method_class(model if takes_module else model.forward, layer)
            options = arguments(input)
            if importance_type == "feature_ablation_abs":
                options["layer_mask"] = _feature_ablation_mask(layer, input, model)
            for module, rule in lrp_rules:  # captum removes the rules after each call
                module.rule = rule
            lrp_context = (
                _identity_as_non_linear()
                if importance_type == "lrp_abs"
                else contextlib.nullcontext()
            )
            with torch.enable_grad(), lrp_context:
                attribution = method.attribute(input, target=target, **options)
            if isinstance(attribution, tuple):
                attribution = attribution[0]
            values = attribution.detach().abs()
            if values.shape[0] != input.shape[0] and values.ndim > 1:
                values = values.expand(input.shape[0], *values.shape[1:])
            result[name] = values.mean(dim=(0, *range(2, values.ndim))).to(layer.weight.dtype)
    finally:
        for module, _ in lrp_rules:
            if hasattr(module, "rule"):
                del module.rule
        for module, training in modes.items():
            module.train(training)
        with torch.no_grad():
            for name, saved in statistics.items():
                model.get_buffer(name).copy_(saved)
    return result


def _owned_by_batch_norm(model: nn.Module, buffer_name: str) -> bool:
    owner, _, _ = buffer_name.rpartition(".")
    return isinstance(model.get_submodule(owner) if owner else model, _BatchNorm)


def _lrp_rules(model: nn.Module, input: Tensor) -> list[tuple[nn.Module, Any]]:
    """LRP rules for the leaf modules captum has none for: ``(module, rule)`` pairs.

    Modules the forward never calls (parameter containers, the mask store) get the identity rule,
    only to pass captum's check; ``nn.Identity`` is handled as captum handles ReLU (see
    :func:`_identity_as_non_linear`); batch norms of any dimension take captum's epsilon rule (its default for ``BatchNorm2d``). Other
    unsupported modules are left for captum to refuse.
    """
    rules = importlib.import_module("captum.attr._utils.lrp_rules")
    lrp = importlib.import_module("captum.attr._core.lrp")
    known = (*lrp.SUPPORTED_LAYERS_WITH_RULES, *lrp.SUPPORTED_NON_LINEAR_LAYERS, *_PASS_THROUGH)
    leaves = [
        module
        for module in model.modules()
        if next(module.children(), None) is None
        and not hasattr(module, "rule")
        and type(module) not in known  # captum matches exact types
    ]
    called: set[int] = set()
    handles = [
        leaf.register_forward_hook(lambda module, args, output: called.add(id(module)))
        for leaf in leaves
    ]
    try:
        with torch.no_grad():
            model(input)
    finally:
        for handle in handles:
            handle.remove()
    pairs: list[tuple[nn.Module, Any]] = []
    for module in leaves:
        if id(module) not in called:
            pairs.append((module, rules.IdentityRule()))
        elif isinstance(module, _BatchNorm):
            pairs.append((module, rules.EpsilonRule()))
    return pairs


#: Modules LRP passes relevance through unchanged, as captum does for ReLU.
_PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.Identity, nn.Flatten)


@contextlib.contextmanager
def _identity_as_non_linear() -> Iterator[None]:
    """Let LRP treat ``nn.Identity`` and ``nn.Flatten`` as ReLU: no rule, relevance unchanged.

    An identity rule's hooks fail on ``nn.Identity``, whose output is its input tensor itself.
    captum keeps the pass-through types in a module-level list; the types are added to it for
    the call only. (A ResNet's residual sum is a tensor addition, not a module: LRP passes it as
    the gradient does.)
    """
    lrp = importlib.import_module("captum.attr._core.lrp")
    added = [kind for kind in _PASS_THROUGH if kind not in lrp.SUPPORTED_NON_LINEAR_LAYERS]
    lrp.SUPPORTED_NON_LINEAR_LAYERS.extend(added)
    try:
        yield
    finally:
        for kind in added:
            lrp.SUPPORTED_NON_LINEAR_LAYERS.remove(kind)
