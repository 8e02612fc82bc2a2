"""Domain-incremental learning (cl_paradigm=DIL): one shared head, task-local labels."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from clarena.cl import CLMLP, HeadDIL
from clarena.experiments import cli
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.running.algorithms import HAT, WSN, FGAdaHAT, Independent
from clarena.experiments.running.pipelines.cl import build_algorithm
from clarena.experiments.runs.resume import load_resume_state
from clarena.experiments.testing import quick_run_overrides, quiet_trainer
from clarena.hat import HATMaskMLP
from clarena.wsn import WSNMaskMLP

INPUT_DIM, FEATURE_DIM, NUM_CLASSES = 12, 8, 3
SGD = functools.partial(torch.optim.SGD, lr=0.1)
TINY = quick_run_overrides(val_batches=None)


def _model(name: str):
    torch.manual_seed(0)
    heads = HeadDIL(FEATURE_DIM)
    if name == "wsn":
        return WSN(WSNMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM), heads, SGD, mask_percentage=0.5)
    if name == "independent":
        return Independent(CLMLP(INPUT_DIM, [16, 10], FEATURE_DIM), heads, SGD)
    backbone = HATMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM)
    if name == "fgadahat":
        return FGAdaHAT(
            backbone,
            heads,
            SGD,
            adjustment_intensity=0.1,
            importance_type="activation_abs",
            importance_summing_strategy="add_latest",
            importance_scheduler_type="sparsity_reg",
            neuron_to_weight_importance_aggregation_mode="min",
        )
    return HAT(backbone, heads, SGD)


def _fit(model, task_id: int) -> None:
    torch.manual_seed(task_id)
    generator = torch.Generator().manual_seed(task_id)
    inputs = torch.randn(32, INPUT_DIM, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (32,), generator=generator)
    model.setup_task_id(task_id, NUM_CLASSES)
    trainer = quiet_trainer(
        limit_val_batches=0,
        max_epochs=2,
    )
    trainer.fit(model, DataLoader(TensorDataset(inputs, labels), batch_size=8))


def _test_feature_and_logits(model, task_id: int, probe: torch.Tensor):
    model.eval()
    with torch.no_grad():
        feature, _ = model.backbone_forward(probe, "test", task_id)
        logits, _ = model(probe, "test", task_id)
    model.train()
    return feature, logits


@pytest.mark.parametrize("name", ["hat", "wsn"])
def test_masked_feature_of_task_1_is_bit_exact_while_the_shared_head_trains(name):
    model = _model(name)
    probe = torch.randn(16, INPUT_DIM, generator=torch.Generator().manual_seed(9))
    _fit(model, 1)
    feature, logits = _test_feature_and_logits(model, 1, probe)
    head = model.heads.get_head().weight.detach().clone()
    _fit(model, 2)
    _fit(model, 3)
    # One head for all tasks, trained by every task.
    assert [name for name, _ in model.heads.named_parameters()] == ["head.weight", "head.bias"]
    assert not torch.equal(model.heads.get_head().weight, head)
    later_feature, later_logits = _test_feature_and_logits(model, 1, probe)
    assert torch.equal(later_feature, feature)
    assert not torch.equal(later_logits, logits)


def test_fgadahat_reads_the_shared_head_in_dil():
    # Output-side importance of the feature layer reads the head: in DIL the one shared head.
    model = _model("fgadahat")
    model.importance_type = "output_weight_abs_sum"
    _fit(model, 1)
    _fit(model, 2)
    assert model.importance.finished_task_ids == [1, 2]
    assert model._head_weight() is model.heads.get_head().weight


def test_independent_keeps_each_task_head_and_backbone_in_dil():
    model = _model("independent")
    probe = torch.randn(16, INPUT_DIM, generator=torch.Generator().manual_seed(9))
    _fit(model, 1)
    _, logits = _test_feature_and_logits(model, 1, probe)
    _fit(model, 2)
    assert sorted(model.task_heads) == ["1", "2"]
    assert torch.equal(_test_feature_and_logits(model, 1, probe)[1], logits)
    optimizer_parameters = {id(p) for p in model.trainable_parameters()}
    assert id(model.task_heads["2"].weight) in optimizer_parameters
    assert id(model.heads.get_head().weight) not in optimizer_parameters


def test_build_algorithm_gives_dil_one_shared_head():
    cfg = OmegaConf.create(
        {
            "cl_paradigm": "DIL",
            "backbone": {
                "_target_": "clarena.backbones.CLMLP",
                "input_dim": 4,
                "hidden_dims": [5],
                "output_dim": 3,
            },
            "cl_algorithm": {"_target_": "clarena.experiments.algorithms.Finetuning"},
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        }
    )
    algorithm = build_algorithm(ExperimentConfig.parse(cfg, strict=False))
    assert isinstance(algorithm.heads, HeadDIL)
    algorithm.setup_task_id(1, 2)
    algorithm.setup_task_id(2, 2)
    assert algorithm.heads.task_ids == [1, 2]
    assert len(list(algorithm.trainable_parameters())) == 4 + 2  # backbone (2 layers) + head


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "algorithm"),
    [
        ([], "HAT"),
        (["cl_algorithm=finetuning", "backbone=clmlp"], "Finetuning"),
        (["cl_algorithm=wsn", "backbone=wsnmaskmlp"], "WSN"),
        (["cl_algorithm=fgadahat", "optimizer=sgd", "cl_dataset=permuted_digits"], "FGAdaHAT"),
    ],
)
def test_dil_example_runs_and_records_the_test_task_id(run_clarena, overrides, algorithm):
    run_dir = run_clarena("example_clmain_dil", "train_tasks=2", *TINY, *overrides)
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["cl_paradigm"] == "DIL"
    assert summary["algorithm"] == algorithm
    assert summary["task_id_at_test"] == "oracle"
    assert summary["trained_tasks"] == [1, 2]


@pytest.mark.parametrize("paradigm", ["DIL", "TIL"])
def test_rotated_sequence_runs_under_dil_and_til(run_clarena, paradigm):
    run_dir = run_clarena(
        "example_clmain_dil",
        "train_tasks=3",
        *TINY,
        "cl_dataset=rotated_digits",
        "cl_dataset.angles=[0,60,120,180,240]",
        f"cl_paradigm={paradigm}",
    )
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["cl_paradigm"] == paradigm
    assert summary["trained_tasks"] == [1, 2, 3]
    state = load_resume_state(run_dir)
    heads = {
        key: tuple(value.shape)
        for key, value in state["state_dict"].items()
        if key.startswith("heads.") and isinstance(value, torch.Tensor)
    }
    # DIL: one 10-class head shared by the rotations; TIL: one 10-class head per task.
    expected = (
        {"heads.head.weight": (10, 64), "heads.head.bias": (10,)}
        if paradigm == "DIL"
        else {
            f"heads.heads.{t}.{p}": s
            for t in (1, 2, 3)
            for p, s in (("weight", (10, 64)), ("bias", (10,)))
        }
    )
    assert heads == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["cl_dataset.class_split=[[0,1],[2,3,4]]"],
            "cl_paradigm=DIL shares one head, so every task needs the same number of classes; "
            "the tasks have {1: 2, 2: 3} classes",
        ),
        (["cl_paradigm=DOMAIN"], "cl_paradigm must be one of TIL, CIL, DIL; got 'DOMAIN'"),
    ],
)
def test_dil_refuses_before_training(tmp_path, monkeypatch, capsys, overrides, message):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    arguments = ["experiment=example_clmain_dil", f"output_dir={run_dir}", "train_tasks=2"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*arguments, *TINY, *overrides])
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err
    assert not (run_dir / "lightning_logs").exists()
    assert not (run_dir / "results").exists()
