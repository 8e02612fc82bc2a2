"""FG-AdaHAT's 10 attribution importance types against captum called directly.

The reference rebuilds the train-stage forward of the current step by hand from the backbone's
own ``Linear`` modules, the step's annealed mask and the task's head, and calls captum's layer
attributions on it with the arguments the annex (``spec/fg-adahat-dil.md`` §1.2) names: the
true-class logit as target, zero baselines, ``mean_{batch} |Phi|`` per unit.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from clarena.cl import HeadsTIL
from clarena.experiments.running.algorithms import FGAdaHAT
from clarena.experiments.running.algorithms.fg_adahat_attribution import attribution_importance
from clarena.hat import ATTRIBUTION_IMPORTANCE_TYPES, HATMaskMLP, annealed_scale

attr = pytest.importorskip("captum.attr")

INPUT_DIM, HIDDEN_DIMS, FEATURE_DIM, NUM_CLASSES, BATCH = 16, [6, 5], 4, 3, 5
TASK_ID, BATCH_IDX, NUM_BATCHES = 1, 2, 4
REQUIRED = {
    "adjustment_intensity": 0.1,
    "importance_summing_strategy": "add_latest",
    "importance_scheduler_type": "linear_sparsity_reg",
    "neuron_to_weight_importance_aggregation_mode": "min",
}


def _algorithm(importance_type: str) -> FGAdaHAT:
    """A fixed HATMaskMLP with task 1 set up (embedding initialised) and its head, in float64."""
    torch.manual_seed(6)  # a draw whose feature units are not all dead after the last ReLU
    backbone = HATMaskMLP(
        input_dim=INPUT_DIM,
        hidden_dims=HIDDEN_DIMS,
        output_dim=FEATURE_DIM,
        batch_normalization=None,
    )
    algorithm = FGAdaHAT(
        backbone,
        HeadsTIL(FEATURE_DIM),
        functools.partial(torch.optim.SGD, lr=0.1),
        importance_type=importance_type,
        s_max=2.0,  # a mid-annealing gate that lets every layer pass a signal
        **REQUIRED,
    )
    algorithm.setup_task_id(TASK_ID, NUM_CLASSES)
    algorithm.step_scale = annealed_scale(algorithm.s_max, BATCH_IDX, NUM_BATCHES)
    return algorithm.double()


def _seed_captum() -> None:
    """GradientShap draws its baselines with torch and its path points with numpy."""
    torch.manual_seed(11)
    np.random.seed(11)


def _batch() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(BATCH, INPUT_DIM, generator=generator, dtype=torch.float64)
    return inputs, torch.randint(0, NUM_CLASSES, (BATCH,), generator=generator)


class _ReferenceForward(nn.Module):
    """Train-stage logits written out: ``relu((W x + b) * mask)`` per layer, then the head.

    It holds the backbone's own ``Linear`` modules (so the attributed layers are the same
    objects), plain non-in-place ReLUs, and the step's annealed masks, computed from the embedding, as constants.
    """

    def __init__(self, algorithm: FGAdaHAT) -> None:
        super().__init__()
        backbone = algorithm.backbone
        self.layers = nn.ModuleList(
            backbone.get_layer_by_name(n) for n in backbone.weighted_layer_names
        )
        self.relus = nn.ModuleList(nn.ReLU() for _ in self.layers)
        self.head = algorithm.heads.heads[str(TASK_ID)]
        # HAT's annealed gate of batch b of B (counting 1..B): s = 1/s_max + (s_max - 1/s_max)
        # (b - 1)/(B - 1), mask = sigmoid(s e) of the current task's embedding e.
        s_max = algorithm.s_max
        s = 1 / s_max + (s_max - 1 / s_max) * (BATCH_IDX - 1) / (NUM_BATCHES - 1)
        self.masks = [
            torch.sigmoid(s * backbone.task_embedding[n]).detach()
            for n in backbone.weighted_layer_names
        ]

    def forward(self, input: Tensor) -> Tensor:
        x = input
        for layer, relu, mask in zip(self.layers, self.relus, self.masks, strict=True):
            x = relu(layer(x) * mask)
        return self.head(x)


def _reference(importance_type: str, model: _ReferenceForward, layer: nn.Module, x, y) -> Tensor:
    """``mean_batch |Phi|`` of ``layer``'s units from captum called directly."""
    zeros = torch.zeros_like(x)
    if importance_type == "gradient_x_activation_abs":
        phi = attr.LayerGradientXActivation(model.forward, layer).attribute(x, target=y)
    elif importance_type == "conductance_abs":
        phi = attr.LayerConductance(model.forward, layer).attribute(
            x, baselines=zeros, target=y, n_steps=50
        )
    elif importance_type == "internal_influence_abs":
        phi = attr.InternalInfluence(model.forward, layer).attribute(
            x, baselines=zeros, target=y, n_steps=5
        )
    elif importance_type == "gradcam_abs":
        phi = attr.LayerGradCam(model.forward, layer).attribute(
            x, target=y, attr_dim_summation=False
        )
    elif importance_type == "deeplift_abs":
        phi = attr.LayerDeepLift(model, layer).attribute(x, baselines=zeros, target=y)
    elif importance_type == "deepliftshap_abs":
        # captum needs a distribution of more than one baseline: two zero examples.
        phi = attr.LayerDeepLiftShap(model, layer).attribute(
            x, baselines=torch.zeros(2, INPUT_DIM, dtype=x.dtype), target=y
        )
    elif importance_type == "gradientshap_abs":
        phi = attr.LayerGradientShap(model.forward, layer).attribute(x, baselines=zeros, target=y)
    elif importance_type == "integrated_gradients_abs":
        phi = attr.LayerIntegratedGradients(model.forward, layer).attribute(
            x, baselines=zeros, target=y, n_steps=50
        )
    elif importance_type == "feature_ablation_abs":
        phi = attr.LayerFeatureAblation(model.forward, layer).attribute(x, target=y)
    elif importance_type == "lrp_abs":
        phi = attr.LayerLRP(model, layer).attribute(x, target=y)
    else:
        raise AssertionError(importance_type)
    assert phi.shape == (BATCH, layer.out_features), importance_type
    return phi.detach().abs().mean(dim=0)


@pytest.mark.parametrize("importance_type", ATTRIBUTION_IMPORTANCE_TYPES)
def test_attribution_importance_equals_captum_called_directly(importance_type):
    algorithm = _algorithm(importance_type)
    x, y = _batch()
    model = _ReferenceForward(algorithm)
    # The hand-written forward is the algorithm's train-stage forward of this step.
    feature, _, _ = algorithm.backbone(
        x, "train", s_max=algorithm.s_max, batch_idx=BATCH_IDX, num_batches=NUM_BATCHES
    )
    torch.testing.assert_close(model(x), algorithm.heads(feature, TASK_ID), rtol=0, atol=0)

    _seed_captum()
    got = attribution_importance(algorithm, importance_type, x, y, scale=algorithm.step_scale)

    names = algorithm.backbone.weighted_layer_names
    assert list(got) == names
    _seed_captum()  # the same draws as the algorithm's call: the layers in the same order
    for name in names:
        layer = algorithm.backbone.get_layer_by_name(name)
        expected = _reference(importance_type, model, layer, x, y)
        assert got[name].dtype == torch.float64
        torch.testing.assert_close(
            got[name], expected, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}"
        )
        assert bool(expected.max() > expected.min()), name  # not a degenerate reference


def test_feature_ablation_is_the_annex_formula():
    """FA: ``Phi_i = mean_b |f_y(x) - f_y(x; z_i <- 0)|`` for each unit ``i`` of each layer."""
    algorithm = _algorithm("feature_ablation_abs")
    x, y = _batch()
    model = _ReferenceForward(algorithm)
    got = attribution_importance(
        algorithm, "feature_ablation_abs", x, y, scale=algorithm.step_scale
    )
    with torch.no_grad():
        full = model(x).gather(1, y[:, None])[:, 0]
        for name in algorithm.backbone.weighted_layer_names:
            layer = algorithm.backbone.get_layer_by_name(name)
            expected = torch.empty(layer.out_features, dtype=x.dtype)
            for unit in range(layer.out_features):

                def zero_unit(module, args, output, unit=unit):
                    output = output.clone()
                    output[:, unit] = 0
                    return output

                handle = layer.register_forward_hook(zero_unit)
                try:
                    ablated = model(x).gather(1, y[:, None])[:, 0]
                finally:
                    handle.remove()
                expected[unit] = (full - ablated).abs().mean()
            torch.testing.assert_close(
                got[name], expected, rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}"
            )
