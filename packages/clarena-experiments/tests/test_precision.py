"""Lightning's ``trainer.precision`` with the algorithms that protect earlier tasks.

HAT, WSN and Independent: the test-stage outputs of task 1 after training task 2 equal, bit for
bit, those right after task 1, compared within the same precision (the test forward runs in
Lightning's context of that precision: bf16 autocast, float64 inputs). AdaHAT and FG-AdaHAT:
task 1's stored mask and head stay bit-exact. ``16-mixed`` needs CUDA: see ``test_cuda.py``.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from clarena.cl import CLMLP, HeadsTIL
from clarena.experiments.running.algorithms import HAT, WSN, AdaHAT, FGAdaHAT, Independent
from clarena.experiments.running.algorithms.base import CLConfigError
from clarena.experiments.testing import quiet_trainer
from clarena.hat import HATMaskMLP
from clarena.wsn import WSNMaskMLP

INPUT_DIM, FEATURE_DIM, NUM_CLASSES = 12, 8, 3
SGD = functools.partial(torch.optim.SGD, lr=0.1)
#: Every CPU precision of Lightning that keeps float parameters trainable.
PRECISIONS = ["bf16-mixed", "32-true", "64-true"]
#: The algorithms whose earlier tasks' test outputs may not change.
NO_FORGETTING = ["hat", "wsn", "independent"]
#: AdaHAT and FG-AdaHAT protect earlier tasks softly (a gradient factor that never reaches 0), so
#: their earlier outputs move by design; what they store of a task may not.
SOFT_PROTECTION = ["adahat", "fgadahat"]


def _model(name: str):
    torch.manual_seed(0)
    heads = HeadsTIL(FEATURE_DIM)
    if name == "wsn":
        backbone = WSNMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization="independent")
        return WSN(backbone, heads, SGD, mask_percentage=0.5)
    if name == "independent":
        return Independent(CLMLP(INPUT_DIM, [16, 10], FEATURE_DIM), heads, SGD)
    backbone = HATMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization="independent")
    if name == "fgadahat":
        return FGAdaHAT(
            backbone,
            heads,
            SGD,
            adjustment_intensity=0.1,
            importance_type="input_weight_gradient_abs_sum",
            importance_summing_strategy="add_latest",
            importance_scheduler_type="linear_sparsity_reg",
            neuron_to_weight_importance_aggregation_mode="min",
        )
    return (AdaHAT if name == "adahat" else HAT)(backbone, heads, SGD)


def _trainer(precision: str, **options) -> Trainer:
    return quiet_trainer(
        precision=precision,
        limit_val_batches=0,
        **options,
    )


def _fit(model, task_id: int, precision: str) -> None:
    torch.manual_seed(task_id)
    generator = torch.Generator().manual_seed(task_id)
    inputs = torch.randn(32, INPUT_DIM, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (32,), generator=generator)
    _trainer(precision, max_epochs=2).fit(
        model, DataLoader(TensorDataset(inputs, labels), batch_size=8)
    )


def _test_outputs(model, task_id: int, inputs: torch.Tensor, precision: str) -> torch.Tensor:
    """Task ``task_id``'s test-stage logits of ``inputs`` as Lightning's test loop computes them."""
    plugin = _trainer(precision).precision_plugin
    model.eval()
    with torch.no_grad(), plugin.forward_context():
        logits, _ = model(plugin.convert_input(inputs), "test", task_id)
    model.train()
    return logits


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", NO_FORGETTING)
def test_training_task_2_leaves_task_1_test_outputs_bit_exact(name: str, precision: str) -> None:
    model = _model(name)
    probe = torch.randn(16, INPUT_DIM, generator=torch.Generator().manual_seed(9))
    model.setup_task_id(1, NUM_CLASSES)
    _fit(model, 1, precision)
    after_first = _test_outputs(model, 1, probe, precision)
    model.setup_task_id(2, NUM_CLASSES)
    weights = {key: value.detach().clone() for key, value in model.named_parameters()}
    _fit(model, 2, precision)
    after_second = _test_outputs(model, 1, probe, precision)
    expected_dtype = {"bf16-mixed": torch.bfloat16, "64-true": torch.float64}
    assert after_first.dtype == expected_dtype.get(precision, torch.float32)
    assert torch.equal(after_second, after_first)
    # Not vacuous: task 2 trained backbone weights (the shared ones; Independent's own copy).
    changed = [k for k, value in model.named_parameters() if not torch.equal(value, weights[k])]
    assert any(k.startswith(("backbone.fc.", "task_backbones.2.fc.")) for k in changed), changed


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", SOFT_PROTECTION)
def test_soft_protection_keeps_task_1_mask_and_head_bit_exact(name: str, precision: str) -> None:
    model = _model(name)
    model.setup_task_id(1, NUM_CLASSES)
    _fit(model, 1, precision)
    mask = {layer: value.clone() for layer, value in model.hat.stored_mask(1).items()}
    head = {
        key: value.detach().clone() for key, value in model.heads.heads["1"].state_dict().items()
    }
    shared = model.backbone.fc[0].weight.detach().clone()
    model.setup_task_id(2, NUM_CLASSES)
    _fit(model, 2, precision)
    stored = model.hat.stored_mask(1)
    assert all(torch.equal(stored[layer], value) for layer, value in mask.items())
    assert all(torch.equal(model.heads.heads["1"].state_dict()[k], v) for k, v in head.items())
    assert torch.isfinite(model.backbone.fc[0].weight).all()
    assert not torch.equal(model.backbone.fc[0].weight, shared)


def _under_a_gradient_scaler(model) -> None:
    """Attach a stand-in trainer whose precision plugin holds a GradScaler, as 16-mixed's does."""
    model._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=object()))


@pytest.mark.parametrize("name", ["hat", "adahat", "fgadahat", "wsn"])
def test_a_self_unscaling_fused_optimiser_under_a_gradient_scaler_is_refused(name: str) -> None:
    model = _model(name)
    model.optimizer_factory = functools.partial(torch.optim.SGD, lr=0.1, fused=True)
    model.setup_task_id(1, NUM_CLASSES)
    _under_a_gradient_scaler(model)
    with pytest.raises(CLConfigError, match=r"needs them unscaled.*Set optimizer.fused=false"):
        model.configure_optimizers()


@pytest.mark.parametrize("fused", [False, True])
def test_fused_is_refused_only_under_a_gradient_scaler(fused: bool) -> None:
    model = _model("hat")
    model.optimizer_factory = functools.partial(torch.optim.SGD, lr=0.1, fused=True)
    model.setup_task_id(1, NUM_CLASSES)
    model.configure_optimizers()  # no trainer, no scaler (32-true, bf16-mixed): accepted
    model.optimizer_factory = functools.partial(torch.optim.SGD, lr=0.1, fused=fused)
    _under_a_gradient_scaler(model)
    if fused:
        with pytest.raises(CLConfigError, match="fused=True"):
            model.configure_optimizers()
    else:
        assert isinstance(model.configure_optimizers(), torch.optim.SGD)
