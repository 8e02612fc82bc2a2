"""Device tests: they run where CUDA is present and are reported SKIPPED where it is not.

Nothing here passes on a CPU-only machine: every test is skipped there with a reason naming
what it needs, and ``-ra`` lists the skips. On a GPU machine, from the repository root with the
packages installed (``pip install -e packages/...``, or the dev venv):

    pytest packages/clarena-experiments/tests/test_cuda.py -ra -v          # 1 GPU: all but DDP
    CUDA_VISIBLE_DEVICES=0,1 pytest packages/clarena-experiments/tests/test_cuda.py -ra -v -k ddp

What they show: HAT and WSN masks on CUDA equal the CPU's; state dicts and model files move
between devices with ``map_location``; a 2-GPU DDP run keeps every rank identical; under
``16-mixed`` (fp16 autocast with a GradScaler, CUDA only) training task 2 leaves task 1's test
outputs bit-exact. Lightning unscales the gradients (``GradScaler.unscale_``) before it calls
``on_before_optimizer_step``, where HAT/WSN rewrite them (``MixedPrecision.optimizer_step`` in
``lightning/pytorch/plugins/precision/amp.py``), so the rewrites act on true gradients.
"""

from __future__ import annotations

import copy
import csv
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from clarena.cl import CLMLP, HeadsTIL
from clarena.experiments.running.algorithms import HAT, WSN, Independent
from clarena.experiments.testing import quiet_trainer
from clarena.hat import HATMaskMLP, hat_of
from clarena.wsn import WSNMaskMLP, wsn_of

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")

INPUT_DIM, FEATURE_DIM, NUM_CLASSES, MASK_PERCENTAGE = 12, 8, 3, 0.5
SGD = functools.partial(torch.optim.SGD, lr=0.1)
CLARENA = Path(sys.executable).parent / "clarena"
SHORT_RUN = (
    "train_tasks=2",
    "trainer.max_epochs=1",
    "lightning_loggers=none",
    "callbacks=none",
    "metrics.accuracy_matrix_plot=null",
    "metrics.average_accuracy_plot=null",
)


def _algorithm(name: str):
    torch.manual_seed(0)
    heads = HeadsTIL(FEATURE_DIM)
    if name == "wsn":
        backbone = WSNMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization="independent")
        return WSN(backbone, heads, SGD, mask_percentage=MASK_PERCENTAGE)
    if name == "independent":
        return Independent(CLMLP(INPUT_DIM, [16, 10], FEATURE_DIM), heads, SGD)
    backbone = HATMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization="independent")
    return HAT(backbone, heads, SGD)


def _with_two_stored_tasks(name: str):
    """An algorithm with tasks 1 and 2 set up and their masks stored, as after training."""
    algorithm = _algorithm(name)
    for task_id in (1, 2):
        torch.manual_seed(task_id)
        algorithm.setup_task_id(task_id, NUM_CLASSES)
        if name == "wsn":
            wsn_of(algorithm.backbone).store_mask(MASK_PERCENTAGE, task_id)
        else:
            algorithm.hat.end_task(task_id)
    return algorithm


def _empty_like(name: str):
    """A fresh algorithm set up for tasks 1 and 2, as the evaluation pipeline builds it."""
    algorithm = _algorithm(name)
    for task_id in (1, 2):
        algorithm.setup_task_id(task_id, NUM_CLASSES)
    return algorithm


def _test_outputs(algorithm, device: str) -> dict[int, torch.Tensor]:
    probe = torch.randn(6, INPUT_DIM, generator=torch.Generator().manual_seed(7)).to(device)
    algorithm.eval()
    with torch.no_grad():
        return {task_id: algorithm(probe, "test", task_id)[0].cpu() for task_id in (1, 2)}


def _assert_same_state(moved: dict[str, object], reference: dict[str, object]) -> None:
    assert list(moved) == list(reference)
    for key, value in reference.items():
        if torch.is_tensor(value):
            assert torch.equal(moved[key].cpu(), value.cpu()), key
        else:
            assert moved[key] == value, key


def _round_trip_through_devices(name: str, tmp_path: Path, device: str) -> None:
    """Save on ``device``, load on the CPU with ``map_location``, save there, load on ``device``."""
    trained = _with_two_stored_tasks(name).to(device)
    expected = _test_outputs(trained, device)
    torch.save(trained.state_dict(), tmp_path / "on_device.pt")
    on_cpu = _empty_like(name)
    on_cpu.load_state_dict(torch.load(tmp_path / "on_device.pt", map_location="cpu"))
    assert all(t.device.type == "cpu" for t in on_cpu.state_dict().values() if torch.is_tensor(t))
    _assert_same_state(on_cpu.state_dict(), trained.state_dict())
    cpu_outputs = _test_outputs(on_cpu, "cpu")
    for task_id, logits in expected.items():
        # The same weights and masks; the devices' kernels may round differently.
        torch.testing.assert_close(cpu_outputs[task_id], logits, rtol=1e-5, atol=1e-6)
    torch.save(on_cpu.state_dict(), tmp_path / "on_cpu.pt")
    back = _empty_like(name).to(device)
    back.load_state_dict(torch.load(tmp_path / "on_cpu.pt", map_location=device))
    _assert_same_state(back.state_dict(), trained.state_dict())
    back_outputs = _test_outputs(back, device)
    assert all(torch.equal(back_outputs[t], logits) for t, logits in expected.items())


@CUDA
def test_hat_masks_on_cuda_equal_the_cpu_masks() -> None:
    on_cpu = _algorithm("hat").backbone
    on_cpu.setup_task_id(1)
    on_cuda = copy.deepcopy(on_cpu).cuda()
    for stage, arguments in (
        ("train", {"s_max": 400.0, "batch_idx": 3, "num_batches": 10}),
        ("validation", {"s_max": 400.0}),
    ):
        cpu_mask = hat_of(on_cpu).get_mask(stage, **arguments)
        cuda_mask = hat_of(on_cuda).get_mask(stage, **arguments)
        for layer, mask in cpu_mask.items():
            # sigmoid(s * e): one rounding of each device's sigmoid apart at most.
            torch.testing.assert_close(cuda_mask[layer].cpu(), mask, rtol=1e-6, atol=1e-7)
    hat_of(on_cpu).store_mask(1)
    hat_of(on_cuda).store_mask(1)
    cuda_stored = hat_of(on_cuda).stored_mask(1)
    for layer, mask in hat_of(on_cpu).stored_mask(1).items():
        assert torch.equal(cuda_stored[layer].cpu(), mask), layer


@CUDA
def test_wsn_masks_on_cuda_equal_the_cpu_masks() -> None:
    cpu_backbone = _algorithm("wsn").backbone
    cpu_backbone.setup_task_id(1)
    cuda_backbone = copy.deepcopy(cpu_backbone).cuda()
    on_cpu, on_cuda = wsn_of(cpu_backbone), wsn_of(cuda_backbone)
    for stage in ("train", "validation"):
        cpu_masks = on_cpu.get_mask(stage, mask_percentage=0.3)
        cuda_masks = on_cuda.get_mask(stage, mask_percentage=0.3)
        # The top 30% of |score|: a selection, exact on every device.
        for cpu_mask, cuda_mask in zip(cpu_masks, cuda_masks, strict=True):
            for layer, mask in cpu_mask.items():
                assert torch.equal(cuda_mask[layer].cpu(), mask), (stage, layer)
    on_cpu.store_mask(0.3, 1)
    on_cuda.store_mask(0.3, 1)
    for cpu_mask, cuda_mask in zip(on_cpu.stored_mask(1), on_cuda.stored_mask(1), strict=True):
        for layer, mask in cpu_mask.items():
            assert torch.equal(cuda_mask[layer].cpu(), mask), layer


@CUDA
@pytest.mark.parametrize("name", ["hat", "wsn"])
def test_state_dict_round_trips_between_cuda_and_cpu(name: str, tmp_path: Path) -> None:
    _round_trip_through_devices(name, tmp_path, "cuda")


def _run(tmp_path: Path, *arguments: str) -> None:
    completed = subprocess.run(
        [str(CLARENA), *arguments],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "results" / "acc.csv").open(newline="") as file:
        return list(csv.DictReader(file))


@CUDA
@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["example_clmain_hat", "example_clmain_wsn"])
def test_a_model_file_saved_on_cuda_evaluates_on_cpu_and_cuda(
    tmp_path: Path, experiment: str
) -> None:
    trained = tmp_path / "trained"
    _run(tmp_path, f"experiment={experiment}", "trainer=gpu", *SHORT_RUN, f"output_dir={trained}")
    last = _rows(trained)[-1]
    for trainer in ("cpu", "gpu"):
        evaluated = tmp_path / f"eval_{trainer}"
        _run(
            tmp_path,
            "experiment=example_clmain_eval",
            f"model_path={trained / 'saved_model.pt'}",
            f"trainer={trainer}",
            "lightning_loggers=none",
            "callbacks=none",
            f"output_dir={evaluated}",
        )
        summary = json.loads((evaluated / "results" / "summary.json").read_text())
        for task, accuracy in summary["final_accuracy_per_task"].items():
            expected = float(last[f"test_on_task_{task}"])
            if trainer == "gpu":
                assert accuracy == expected, task
            else:
                # CPU kernels round differently: at most one of the 359 test images moves.
                assert abs(accuracy - expected) <= 1 / 359 + 1e-12, task


@TWO_GPUS
@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["example_clmain_hat", "example_clmain_wsn"])
def test_two_gpu_ddp_keeps_every_rank_identical(tmp_path: Path, experiment: str) -> None:
    run_dir = tmp_path / "run"
    _run(
        tmp_path,
        f"experiment={experiment}",
        "trainer=ddp",
        "trainer.devices=2",
        *SHORT_RUN,
        "save_model=false",
        f"output_dir={run_dir}",
    )
    for task in (1, 2):
        check = json.loads((run_dir / "rank_check" / f"task_{task}.json").read_text())
        assert len(check["fingerprints"]) == 2
        assert check["fingerprints"][0] == check["fingerprints"][1]
    rows = _rows(run_dir)
    assert rows[1]["test_on_task_1"] == rows[0]["test_on_task_1"]


def _fit_16_mixed(algorithm, task_id: int) -> None:
    torch.manual_seed(task_id)
    generator = torch.Generator().manual_seed(task_id)
    inputs = torch.randn(32, INPUT_DIM, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (32,), generator=generator)
    quiet_trainer(
        accelerator="gpu",
        precision="16-mixed",
        max_epochs=2,
        limit_val_batches=0,
    ).fit(algorithm, DataLoader(TensorDataset(inputs, labels), batch_size=8))


def _fp16_test_outputs(algorithm, probe: torch.Tensor) -> torch.Tensor:
    algorithm.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        logits, _ = algorithm(probe, "test", 1)
    algorithm.train()
    return logits


@CUDA
@pytest.mark.parametrize("name", ["hat", "wsn", "independent"])
def test_16_mixed_training_keeps_task_1_test_outputs_bit_exact(name: str) -> None:
    algorithm = _algorithm(name)
    probe = torch.randn(16, INPUT_DIM, generator=torch.Generator().manual_seed(9)).cuda()
    algorithm.setup_task_id(1, NUM_CLASSES)
    _fit_16_mixed(algorithm, 1)
    after_first = _fp16_test_outputs(algorithm, probe)
    algorithm.setup_task_id(2, NUM_CLASSES)
    weights = {k: v.detach().clone() for k, v in algorithm.named_parameters()}
    _fit_16_mixed(algorithm, 2)
    assert after_first.dtype == torch.float16
    assert torch.equal(_fp16_test_outputs(algorithm, probe), after_first)
    changed = [k for k, v in algorithm.named_parameters() if not torch.equal(v, weights[k])]
    assert any(k.startswith(("backbone.fc.", "task_backbones.2.fc.")) for k in changed), changed
