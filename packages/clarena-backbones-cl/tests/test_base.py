"""CLBackbone task bookkeeping: set-up before forward, errors, order, state_dict."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from clarena.backbones import MLP, BackboneOutput
from clarena.cl import CLMLP, CLBackbone, HeadsTIL, MaskMethod


def make_mlp() -> CLMLP:
    return CLMLP(12, [10, 8], 6, batch_normalization=True)


def test_clmlp_is_a_cl_backbone():
    assert isinstance(make_mlp(), CLBackbone)


def test_forward_before_setup_task_id_is_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"setup_task_id"):
        make_mlp()(torch.randn(3, 12), stage="train")


def test_forward_on_a_task_never_set_up_is_a_value_error():
    mlp = make_mlp()
    mlp.setup_task_id(1)
    with pytest.raises(ValueError, match=r"task 9 was never set up.*\[1\].*setup_task_id\(9\)"):
        mlp(torch.randn(3, 12), stage="test", task_id=9)


@pytest.mark.parametrize("task_id", ["1", 1.0, True, None])
def test_non_integer_task_id_is_a_type_error(task_id):
    mlp = make_mlp()
    with pytest.raises(TypeError, match=r"task_id must be an integer"):
        mlp.setup_task_id(task_id)
    assert mlp.task_id is None
    assert mlp.processed_task_ids == []


@pytest.mark.parametrize("task_id", [0, -1])
def test_task_id_below_one_is_a_value_error_and_changes_nothing(task_id):
    mlp = make_mlp()
    mlp.setup_task_id(1)
    with pytest.raises(
        ValueError,
        match=rf"^CLMLP: task_id must be >= 1 \(tasks are numbered from 1\); got {task_id}\.",
    ):
        mlp.setup_task_id(task_id)
    assert mlp.task_id == 1
    assert mlp.processed_task_ids == [1]


@pytest.mark.parametrize("task_id", [0, -1])
def test_heads_refuse_a_task_id_below_one(task_id):
    heads = HeadsTIL(input_dim=8)
    with pytest.raises(ValueError, match=rf"^HeadsTIL: task_id must be >= 1 .*got {task_id}\."):
        heads.setup_task_id(task_id, 2)
    assert heads.task_ids == []


def test_bad_stage_is_a_value_error():
    mlp = make_mlp()
    mlp.setup_task_id(1)
    with pytest.raises(ValueError, match=r"stage must be one of.*got 'training'"):
        mlp(torch.randn(3, 12), stage="training")


def test_stages_and_none_are_accepted():
    mlp = make_mlp().eval()
    mlp.setup_task_id(1)
    x = torch.randn(3, 12)
    outputs = [mlp(x, stage=stage)[0] for stage in ("train", "validation", "test", None)]
    for output in outputs[1:]:
        assert torch.equal(output, outputs[0])


def test_processed_task_ids_keep_set_up_order_without_duplicates():
    mlp = make_mlp()
    for task_id in (1, 5, 3, 5, 1):
        mlp.setup_task_id(task_id)
    assert mlp.processed_task_ids == [1, 5, 3]
    assert mlp.task_id == 1


def test_task_id_argument_selects_a_processed_task_and_defaults_to_current():
    mlp = make_mlp()
    mlp.setup_task_id(1)
    mlp.setup_task_id(5)
    assert mlp.check_task_id_ready() == 5
    assert mlp.check_task_id_ready(1) == 1
    mlp.eval()
    x = torch.randn(4, 12)
    # a shared backbone computes the same function for every task
    assert torch.equal(mlp(x, "test", task_id=1)[0], mlp(x, "test")[0])


def test_state_dict_reload_restores_task_bookkeeping_and_outputs():
    torch.manual_seed(0)
    mlp = make_mlp()
    for task_id in (1, 5, 3):
        mlp.setup_task_id(task_id)
        mlp.train()
        mlp(torch.randn(8, 12), stage="train")  # moves the batch-norm running statistics
    buffer = io.BytesIO()
    torch.save(mlp.state_dict(), buffer)
    buffer.seek(0)

    fresh = make_mlp()
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    assert fresh.task_id == 3
    assert fresh.processed_task_ids == [1, 5, 3]
    mlp.eval()
    fresh.eval()
    x = torch.randn(5, 12)
    with torch.no_grad():
        for task_id in (1, 5, 3):
            expected, expected_activations = mlp(x, stage="test", task_id=task_id)
            got, got_activations = fresh(x, stage="test", task_id=task_id)
            assert torch.equal(got, expected)
            for name in expected_activations:
                assert torch.equal(got_activations[name], expected_activations[name])


def test_reloaded_bookkeeping_is_a_copy():
    mlp = make_mlp()
    mlp.setup_task_id(2)
    fresh = make_mlp()
    fresh.load_state_dict(mlp.state_dict())
    fresh.setup_task_id(4)
    assert mlp.processed_task_ids == [2]
    assert fresh.processed_task_ids == [2, 4]


def test_clmlp_takes_the_core_mlp_arguments():
    mlp = CLMLP(12, [10], 6, batch_normalisation=True, dropout=0.5, bias=False)
    assert mlp.batch_normalization is True
    assert mlp.get_layer_by_name("fc/0").bias is None
    with pytest.raises(TypeError, match=r"'hidden_dim'.*Did you mean 'hidden_dims'"):
        CLMLP(12, hidden_dim=[10], output_dim=6)


def test_check_task_id_is_public_api_of_clarena_cl() -> None:
    import clarena.cl

    assert "check_task_id" in clarena.cl.__all__
    assert clarena.cl.check_task_id(3, "HeadsTIL") == 3
    with pytest.raises(TypeError, match="HeadsTIL: task_id must be an integer; got True"):
        clarena.cl.check_task_id(True, "HeadsTIL")


def test_task_state_is_set_up_once_by_cl_backbone_for_any_family() -> None:
    class CLWideMLP(CLBackbone, MLP):
        """A new family variant: no task bookkeeping of its own."""

    backbone = CLWideMLP(input_dim=4, hidden_dims=[3], output_dim=2)
    assert (backbone.task_id, backbone.processed_task_ids) == (None, [])
    assert not hasattr(CLBackbone, "_init_task_state")
    backbone.setup_task_id(2)
    assert (backbone.task_id, backbone.processed_task_ids) == (2, [2])


def test_mask_method_name_is_that_of_the_attached_method() -> None:
    class Noop(MaskMethod):
        name = "noop"

        def _attach(self, backbone: Any) -> None:
            return None

        def end_task(self, task_id: int) -> None:
            return None

        def forward(
            self, input: Any, stage: Any, task_id: Any, step: Mapping[str, Any]
        ) -> BackboneOutput:
            return BackboneOutput(*self.backbone._run_features(input))

        def layer_usage(self) -> dict[str, tuple[int, int]]:
            return {}

    backbone = CLMLP(input_dim=4, hidden_dims=[3], output_dim=2)
    assert backbone.mask_method_name is None
    assert backbone.attach(Noop()).mask_method_name == "noop"
