"""HATMaskMLP / HATMaskResNet construction, stages, masks, errors and the name registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import clarena.backbones
from clarena.cl import CLMLP, TaskBatchNorm
from clarena.hat import (
    HATMaskMLP,
    HATMaskResNet18,
    HATMaskResNet34,
    HATMaskResNet50,
    HATMaskResNet52,
    HATMaskResNet101,
    HATMaskResNet152,
    annealed_scale,
    hat_of,
    zero_subnormal_gates,
)


def small_mlp(**kwargs):
    return HATMaskMLP(input_dim=12, hidden_dims=[8, 6], output_dim=4, **kwargs)


def set_embedding(backbone, values):
    """Set the current task embedding: layer name → list of values."""
    with torch.no_grad():
        for name, value in values.items():
            backbone.task_embedding[name].copy_(torch.tensor(value, dtype=torch.float32))


def test_task_embedding_has_one_value_per_output_unit():
    mlp = small_mlp()
    assert {k: tuple(v.shape) for k, v in mlp.task_embedding.items()} == {
        "fc/0": (8,),
        "fc/1": (6,),
        "fc/2": (4,),
    }
    resnet = HATMaskResNet18(small_input=True, output_dim=10)
    units = {name: resnet.task_embedding[name].numel() for name in resnet.weighted_layer_names}
    assert units["conv1"] == 64
    assert units["layer2/0/downsample/0"] == 128
    assert units["layer4/1/conv2"] == 512
    assert units["proj"] == 10
    assert all(isinstance(p, nn.Parameter) for p in resnet.task_embedding.values())
    assert "task_embedding.layer3/0/downsample/0" in resnet.state_dict()


def test_resnet18_has_4800_units_and_stores_600_bytes_per_task():
    resnet = HATMaskResNet18(small_input=True)
    assert hat_of(resnet).num_units == 4800
    resnet.setup_task_id(1)
    hat_of(resnet).store_mask()
    stored = resnet.state_dict()["mask_store.tasks.1.units"]
    assert stored.dtype == torch.uint8
    assert stored.numel() == 600
    assert resnet.mask_store.nbytes(1) == 600


def test_a_state_dict_of_the_0_1_mask_layout_loads_into_a_fresh_backbone():
    trained = HATMaskMLP(6, [5], 4)
    for task_id in (3, 1):
        trained.setup_task_id(task_id)
        hat_of(trained).store_mask()
    saved = trained.state_dict()
    # clarena-hat 0.1 kept task t's packed mask as the buffer mask_store.task_{t}.
    legacy = {
        key.replace("mask_store.tasks.", "mask_store.task_").removesuffix(".units"): value
        for key, value in saved.items()
    }
    assert "mask_store.task_3" in legacy
    fresh = HATMaskMLP(6, [5], 4)
    fresh.load_state_dict(legacy)
    assert hat_of(fresh).stored_task_ids == [3, 1]
    for task_id in (3, 1):
        for name, mask in hat_of(trained).stored_mask(task_id).items():
            assert torch.equal(hat_of(fresh).stored_mask(task_id)[name], mask)
    assert fresh.state_dict().keys() == saved.keys()


@pytest.mark.parametrize(
    ("cls", "units"),
    [
        (
            HATMaskResNet34,
            64 + 3 * 2 * 64 + 4 * 2 * 128 + 128 + 6 * 2 * 256 + 256 + 3 * 2 * 512 + 512,
        ),
        (HATMaskResNet50, None),
        (HATMaskResNet101, None),
        (HATMaskResNet152, None),
    ],
)
def test_every_depth_masks_every_weighted_layer(cls, units):
    backbone = cls(small_input=True, output_dim=8, batch_normalization="independent")
    assert list(backbone.task_embedding) == backbone.weighted_layer_names
    assert backbone.weighted_layer_names[-1] == "proj"
    if units is not None:
        assert hat_of(backbone).num_units == units + 8
    assert HATMaskResNet52 is HATMaskResNet50
    backbone.setup_task_id(1)
    hat_of(backbone).store_mask()
    stored = hat_of(backbone).stored_mask(1)
    for name in backbone.weighted_layer_names:
        assert torch.equal(stored[name], (backbone.task_embedding[name] > 0).float()), name


def test_mask_embedding_mode_initialisations():
    mlp = small_mlp()
    mlp.setup_task_id(1)
    hat_of(mlp).initialize_task_embedding("U01")
    values = torch.cat(list(mlp.task_embedding.values()))
    assert values.min() >= 0
    assert values.max() <= 1
    hat_of(mlp).initialize_task_embedding("U-10")
    values = torch.cat(list(mlp.task_embedding.values()))
    assert values.min() >= -1
    assert values.max() <= 0
    hat_of(mlp).initialize_task_embedding("masked")
    assert torch.equal(torch.cat(list(mlp.task_embedding.values())), torch.full((18,), -1.0))
    hat_of(mlp).initialize_task_embedding("unmasked")
    assert torch.equal(torch.cat(list(mlp.task_embedding.values())), torch.ones(18))
    with pytest.raises(ValueError, match=r"unknown task embedding init mode 'N02'.*'N01'"):
        hat_of(mlp).initialize_task_embedding("N02")


def test_annealed_scale_endpoints_and_single_batch():
    assert annealed_scale(400.0, 1, 50) == pytest.approx(1 / 400)
    assert annealed_scale(400.0, 50, 50) == pytest.approx(400.0)
    assert annealed_scale(400.0, 2, 3) == pytest.approx(1 / 400 + (400 - 1 / 400) / 2)
    assert annealed_scale(400.0, 1, 1) == 400.0
    with pytest.raises(ValueError, match=r"batch_idx counts 1..num_batches \(1..5\); got 0"):
        annealed_scale(400.0, 0, 5)


# At s = 400, sigmoid(s e) is subnormal for e in about (-0.2218, -0.2183]: s e in (-88.7, -87.3]
# (below that, exp(-s e) overflows and the gate is exactly 0). e = -0.22 gives 6.1e-39; e = -0.2
# gives 1.8e-35, normal; e = -6 gives exactly 0.
SUBNORMAL_EMBEDDING = {
    "fc/0": [-0.22, 1.0, -0.219, -0.2, -6.0, 0.5, -0.221, 2.0],
    "fc/1": [-0.2185] * 3 + [0.1] * 3,
    "fc/2": [-0.2215, -0.2, 0.0, -0.22],
}


def test_subnormal_gates_are_zero_and_pass_no_gradient(hat_gates):
    """HAT's one deviation: gates below float32's smallest normal are an exact 0."""
    torch.manual_seed(0)
    mlp = small_mlp()
    mlp.setup_task_id(1)
    set_embedding(mlp, SUBNORMAL_EMBEDDING)
    tiny = torch.finfo(torch.float32).tiny
    # sigmoid(s e) on all units at once, as HAT computes it.
    values = [torch.tensor(v) for v in SUBNORMAL_EMBEDDING.values()]
    flat = torch.sigmoid(400.0 * torch.cat(values))
    raw = dict(zip(SUBNORMAL_EMBEDDING, flat.split([v.numel() for v in values]), strict=True))
    expected = hat_gates(400.0, SUBNORMAL_EMBEDDING)
    subnormal = {n: (g > 0) & (g < tiny) for n, g in raw.items()}
    assert sum(int(m.sum()) for m in subnormal.values()) == 8  # the fixture holds subnormals
    x = torch.randn(5, 12)
    for stage, kwargs in (
        ("validation", {"s_max": 400.0}),
        ("train", {"s_max": 400.0, "batch_idx": 3, "num_batches": 3}),
    ):
        feature, mask, _ = mlp(x, stage, **kwargs)
        for name, gate in mask.items():
            assert torch.equal(gate, expected[name])
            assert (gate[subnormal[name]] == 0).all()
            # Every other gate is sigmoid(s e), bit for bit; none is subnormal.
            assert torch.equal(gate[~subnormal[name]], raw[name][~subnormal[name]])
            assert not ((gate > 0) & (gate < tiny)).any()
        # The forward is the plain network under the zeroed masks.
        hidden = x
        for index, layer in enumerate(mlp.fc):
            hidden = torch.relu(layer(hidden) * mask[f"fc/{index}"])
        assert torch.allclose(feature, hidden, rtol=0, atol=1e-6)
    feature, mask, _ = mlp(x, "train", s_max=400.0, batch_idx=3, num_batches=3)
    (feature.sum() + sum(m.sum() for m in mask.values())).backward()
    for name, embedding in mlp.task_embedding.items():
        assert (embedding.grad[subnormal[name]] == 0).all(), name


def test_zero_subnormal_gates_keeps_the_smallest_normal_and_nan():
    tiny = torch.finfo(torch.float32).tiny
    largest_subnormal = torch.nextafter(torch.tensor(tiny), torch.tensor(0.0)).item()
    gate = torch.tensor([0.0, 1.4e-45, largest_subnormal, tiny, 0.5, 1.0, float("nan")])
    expected = torch.tensor([0.0, 0.0, 0.0, tiny, 0.5, 1.0, float("nan")])
    assert torch.allclose(zero_subnormal_gates(gate), expected, rtol=0, atol=0, equal_nan=True)
    half = torch.tensor([3e-5, 7e-5], dtype=torch.float16)  # float16's smallest normal: 6.1e-5
    assert torch.equal(zero_subnormal_gates(half), torch.tensor([0.0, 7e-5], dtype=torch.float16))


def test_train_validation_and_test_masks(hat_gates):
    mlp = small_mlp()
    mlp.setup_task_id(3)
    e = {"fc/0": [1.0, -1.0] * 4, "fc/1": [0.5] * 6, "fc/2": [-0.25, 2.0, 0.0, 3.0]}
    set_embedding(mlp, e)
    x = torch.randn(5, 12)

    _, mask, _ = mlp(x, "train", s_max=10.0, batch_idx=2, num_batches=3)
    s = annealed_scale(10.0, 2, 3)
    expected = hat_gates(s, e)
    for name in e:
        assert torch.equal(mask[name], expected[name])
    assert mask["fc/0"].requires_grad

    _, mask, _ = mlp(x, "train", s_max=10.0, batch_idx=1, num_batches=1)
    assert torch.equal(mask["fc/2"], hat_gates(10.0, e)["fc/2"])

    _, mask, _ = mlp(x, "validation", s_max=10.0)
    assert torch.equal(mask["fc/1"], hat_gates(10.0, e)["fc/1"])

    hat_of(mlp).store_mask()
    _, mask, _ = mlp(x, "test", test_task_id=3)
    assert torch.equal(mask["fc/2"], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert torch.equal(mask["fc/0"], torch.tensor([1.0, 0.0] * 4))


def test_mask_multiplies_unit_outputs_before_activation():
    mlp = HATMaskMLP(input_dim=3, hidden_dims=[], output_dim=4, activation_layer=None)
    mlp.setup_task_id(1)
    set_embedding(mlp, {"fc/0": [1.0, -1.0, 2.0, -3.0]})
    hat_of(mlp).store_mask()
    x = torch.randn(2, 3)
    feature, _, activations = mlp(x, "test")
    expected = mlp.fc[0](x) * torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert torch.equal(feature, expected)
    assert torch.equal(activations["fc/0"], expected)


def test_convolution_masks_broadcast_over_channels():
    resnet = HATMaskResNet18(small_input=True, batch_normalization=None)
    resnet.setup_task_id(1)
    hat_of(resnet).initialize_task_embedding("masked")
    with torch.no_grad():
        resnet.task_embedding["conv1"][:3] = 1.0
    hat_of(resnet).store_mask()
    _, _, activations = resnet(torch.randn(2, 3, 8, 8), "test")
    conv1 = activations["conv1"]
    assert conv1.shape == (2, 64, 8, 8)
    assert conv1[:, 3:].abs().sum() == 0
    assert conv1[:, :3].abs().sum() > 0


def test_stored_cumulative_and_summative_masks_and_capacity():
    mlp = small_mlp()
    mlp.setup_task_id(1)
    set_embedding(mlp, {"fc/0": [1, 1, -1, -1, -1, -1, -1, -1], "fc/1": [1] * 6, "fc/2": [-1] * 4})
    hat_of(mlp).store_mask()
    mlp.setup_task_id(4)
    set_embedding(mlp, {"fc/0": [1, -1, 1, -1, -1, -1, -1, -1], "fc/1": [-1] * 6, "fc/2": [-1] * 4})
    hat_of(mlp).store_mask()
    assert hat_of(mlp).stored_task_ids == [1, 4]
    assert torch.equal(hat_of(mlp).stored_mask(4)["fc/0"], torch.tensor([1.0, 0, 1, 0, 0, 0, 0, 0]))
    assert torch.equal(
        hat_of(mlp).cumulative_mask()["fc/0"], torch.tensor([1.0, 1, 1, 0, 0, 0, 0, 0])
    )
    assert torch.equal(
        hat_of(mlp).summative_mask()["fc/0"], torch.tensor([2.0, 1, 1, 0, 0, 0, 0, 0])
    )
    assert torch.equal(hat_of(mlp).cumulative_mask()["fc/1"], torch.ones(6))
    assert hat_of(mlp).capacity_per_layer() == {"fc/0": 3 / 8, "fc/1": 1.0, "fc/2": 0.0}
    assert hat_of(mlp).capacity() == pytest.approx(9 / 18)


def test_independent_batch_norm_per_task_and_bool_modes():
    independent = small_mlp(batch_normalization="independent")
    assert hat_of(independent).batch_norm_mode == "independent"
    assert isinstance(independent.fc_bn[0], TaskBatchNorm)
    for task_id in (2, 9):
        independent.setup_task_id(task_id)
    assert list(independent.fc_bn[0].norms) == ["2", "9"]

    shared = small_mlp(batch_normalisation=True)
    assert hat_of(shared).batch_norm_mode == "shared"
    assert isinstance(shared.fc_bn[0], nn.BatchNorm1d)
    assert hat_of(shared).normalization_layer("fc/1") is shared.fc_bn[1]

    none = small_mlp(batch_normalization=False)
    assert hat_of(none).batch_norm_mode is None
    assert hat_of(none).normalization_layer("fc/0") is None

    resnet = HATMaskResNet18(small_input=True, batch_normalization=True)
    assert hat_of(resnet).batch_norm_mode == "shared"
    assert (
        hat_of(resnet).normalization_layer("layer2/0/downsample/0")
        is resnet.layer2[0].downsample[1]
    )
    assert hat_of(resnet).normalization_layer("layer3/1/conv2") is resnet.layer3[1].bn2
    with pytest.raises(ValueError, match=r"batch_normalization must be null, 'shared' or"):
        small_mlp(batch_normalization="per-task")


def test_test_stage_selects_the_tasks_own_batch_norm():
    mlp = small_mlp(batch_normalization="independent")
    for task_id in (1, 2):
        mlp.setup_task_id(task_id)
        hat_of(mlp).store_mask()
    mlp.eval()
    mlp(torch.randn(3, 12), "test", test_task_id=1)
    assert mlp.fc_bn[0].active_task == 1
    mlp(torch.randn(3, 12), "test", test_task_id=2)
    assert mlp.fc_bn[0].active_task == 2


def test_error_test_on_task_without_stored_mask():
    mlp = small_mlp()
    mlp.setup_task_id(1)
    with pytest.raises(ValueError, match=r"task 1 has no stored mask.*call store_mask\(\)"):
        mlp(torch.randn(2, 12), "test")
    hat_of(mlp).store_mask()
    with pytest.raises(
        ValueError, match=r"task 2 has no stored mask \(tasks with stored masks: \[1\]\)"
    ):
        mlp(torch.randn(2, 12), "test", test_task_id=2)


def test_error_gate_other_than_sigmoid():
    with pytest.raises(ValueError, match=r"gate='tanh' is not supported; only gate='sigmoid'"):
        small_mlp(gate="tanh")
    with pytest.raises(ValueError, match=r"only gate='sigmoid' is supported"):
        HATMaskResNet18(gate="step")


def test_error_missing_train_arguments_names_them():
    mlp = small_mlp()
    mlp.setup_task_id(1)
    x = torch.randn(2, 12)
    with pytest.raises(
        ValueError,
        match=r"missing s_max, batch_idx\. Call forward\(input, 'train', s_max=\.\.\., batch_idx=\.\.\., num_batches=\.\.\.\)",
    ):
        mlp(x, "train", num_batches=4)
    with pytest.raises(ValueError, match=r"missing num_batches"):
        mlp(x, "train", s_max=400.0, batch_idx=1)
    with pytest.raises(ValueError, match=r"stage 'validation' needs s_max"):
        mlp(x, "validation")
    with pytest.raises(
        ValueError, match=r"stage must be one of 'train', 'validation', 'test'; got None"
    ):
        mlp(x, None)
    with pytest.raises(ValueError, match=r"Use stage 'test' for other tasks"):
        mlp(x, "validation", s_max=4.0, test_task_id=7)


def test_error_forward_before_setup_and_store_for_other_task():
    mlp = small_mlp()
    with pytest.raises(RuntimeError, match=r"no task is set up; call setup_task_id"):
        mlp(torch.randn(2, 12), "validation", s_max=1.0)
    mlp.setup_task_id(1)
    with pytest.raises(
        ValueError,
        match=r"store_mask stores the current task's embedding \(task 1\); got task_id=2",
    ):
        hat_of(mlp).store_mask(2)


def test_error_activation_that_does_not_map_zero_to_zero():
    with pytest.raises(ValueError, match=r"maps 0 to 0.5; HAT needs an activation with f\(0\) = 0"):
        small_mlp(activation_layer=nn.Sigmoid)


def test_registry_resolves_every_hat_name():
    assert clarena.backbones.HATMaskMLP is HATMaskMLP
    assert clarena.backbones.HATMaskResNet18 is HATMaskResNet18
    assert clarena.backbones.HATMaskResNet52 is HATMaskResNet50
    available = clarena.backbones.available_backbones()
    for name in (
        "HATMaskMLP",
        "HATMaskResNet18",
        "HATMaskResNet34",
        "HATMaskResNet50",
        "HATMaskResNet52",
        "HATMaskResNet101",
        "HATMaskResNet152",
    ):
        assert available[name] == "clarena-hat"


def test_hydra_instantiate_with_docs_spelling():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "_target_": "clarena.backbones.HATMaskMLP",
            "input_dim": 784,
            "hidden_dims": [256, 100],
            "output_dim": 64,
            "batch_normalisation": "independent",
        }
    )
    backbone = instantiate(config)
    assert isinstance(backbone, CLMLP)
    assert hat_of(backbone).batch_norm_mode == "independent"
    backbone.setup_task_id(1)
    feature, mask, activations = backbone(
        torch.randn(4, 1, 28, 28), "train", s_max=400.0, batch_idx=1, num_batches=2
    )
    assert feature.shape == (4, 64)
    assert set(mask) == set(activations) == {"fc/0", "fc/1", "fc/2"}


def test_unknown_argument_names_nearest():
    with pytest.raises(TypeError, match=r"unknown argument 'gates'.*Did you mean 'gate'"):
        small_mlp(gates="sigmoid")


@pytest.mark.parametrize("batch_normalization", ["shared", "independent"])
def test_mask_folded_into_batch_norm_equals_batch_norm_then_mask(batch_normalization):
    torch.manual_seed(0)
    mlp = small_mlp(batch_normalization=batch_normalization)
    mlp.setup_task_id(1)
    assert hat_of(mlp).fused_layers == {"fc/0", "fc/1", "fc/2"}
    x = torch.randn(5, 12)
    _, mask, activations = mlp(x, "train", s_max=4.0, batch_idx=2, num_batches=3)
    norm = mlp.fc_bn[0].norms["1"] if batch_normalization == "independent" else mlp.fc_bn[0]
    normalised = nn.functional.batch_norm(mlp.fc[0](x), None, None, norm.weight, norm.bias, True)
    expected = torch.relu(normalised * mask["fc/0"])
    assert torch.allclose(activations["fc/0"], expected, atol=1e-6)


def test_per_task_masked_batch_norms_are_bound_after_setup_and_reload():
    mlp = small_mlp(batch_normalization="independent")
    for task_id in (1, 2):
        mlp.setup_task_id(task_id)
        hat_of(mlp).store_mask()
    for key in ("1", "2"):
        assert mlp.fc_bn[1].norms[key].hat_layer_name == "fc/1"
    fresh = small_mlp(batch_normalization="independent")
    fresh.load_state_dict(mlp.state_dict())
    assert fresh.fc_bn[2].norms["2"].hat_layer_name == "fc/2"
    assert fresh.fc_bn[2].norms["2"].hat is hat_of(fresh)
    fresh.eval()
    x = torch.randn(3, 12)
    mlp.eval()
    assert torch.equal(fresh(x, "test", test_task_id=1)[0], mlp(x, "test", test_task_id=1)[0])
    with pytest.raises(RuntimeError, match=r"no HAT mask is active; run it inside a HAT backbone"):
        fresh.fc_bn[0].norms["1"](torch.randn(3, 8))


def test_deepcopy_and_dtype_conversion_keep_masks_working():
    import copy

    mlp = small_mlp(batch_normalization="independent")
    for task_id in (1, 2):
        mlp.setup_task_id(task_id)
        hat_of(mlp).store_mask()
    mlp.eval()
    x = torch.randn(3, 12)
    clone = copy.deepcopy(mlp)
    assert clone.fc_bn[0].norms["1"].hat is hat_of(clone)
    assert torch.equal(clone(x, "test", test_task_id=1)[0], mlp(x, "test", test_task_id=1)[0])
    double = mlp.double()
    assert hat_of(double).cumulative_mask()["fc/0"].dtype == torch.float64
    assert double(x.double(), "test", test_task_id=2)[0].dtype == torch.float64
