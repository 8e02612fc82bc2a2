"""The papers' per-task schedule (PlateauSchedule): lr on a plateau, the floor, the best restore."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from clarena.cl import CLMLP, HeadsTIL
from clarena.experiments import cli
from clarena.experiments.errors import PipelineConfigError
from clarena.experiments.running.algorithms import HAT, WSN, Finetuning
from clarena.experiments.running.pipelines import cl
from clarena.experiments.running.plateau_schedule import PlateauSchedule
from clarena.experiments.testing import quick_run_overrides, quiet_trainer
from clarena.hat import HATMaskMLP
from clarena.wsn import WSNMaskMLP, wsn_of

INPUT_DIM, FEATURE_DIM, NUM_CLASSES = 12, 8, 3


class Scripted(LightningModule):
    """One linear layer whose validation loss is ``losses[epoch]``; records each epoch's lr."""

    def __init__(self, losses: list[float], lr: float = 1.0) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.losses = losses
        self.lr = lr
        self.task_id = 1
        self.epoch_lrs: list[float] = []

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.log("task_1/val/loss", self.losses[self.current_epoch])

    def on_train_epoch_start(self) -> None:
        self.epoch_lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)


def _fit_scripted(losses: list[float], schedule: PlateauSchedule, max_epochs: int) -> Scripted:
    module = Scripted(losses)
    trainer = quiet_trainer(max_epochs=max_epochs, callbacks=[schedule])
    trainer.fit(module, _loader(), _loader())
    return module


def test_lr_is_divided_after_exactly_patience_epochs_without_improvement() -> None:
    # Epoch 0 best; 1, 2 equal or worse (equal is no improvement); 3 improves and resets the
    # count; 4, 5 worse: the lr falls after epoch 2 and after epoch 5, each the patience-th
    # epoch without improvement.
    losses = [1.0, 1.0, 1.2, 0.5, 0.6, 0.7, 0.8]
    schedule = PlateauSchedule(patience=2, lr_factor=4, lr_min=0.0, restore_best=False)
    module = _fit_scripted(losses, schedule, max_epochs=7)
    assert schedule.reductions == [2, 5]
    assert module.epoch_lrs == [1.0, 1.0, 1.0, 0.25, 0.25, 0.25, 0.0625]
    assert schedule.stopped_epoch is None
    assert schedule.best_epoch == 3


def test_task_stops_once_the_lr_falls_below_the_floor() -> None:
    # No improvement after epoch 0: the lr halves after every epoch (patience 1); 0.25 < 0.3
    # stops the task after epoch 2, long before max_epochs, at the lr the epoch trained with.
    schedule = PlateauSchedule(patience=1, lr_factor=2, lr_min=0.3, restore_best=False)
    module = _fit_scripted([1.0] * 20, schedule, max_epochs=20)
    assert module.epoch_lrs == [1.0, 1.0, 0.5]
    assert schedule.reductions == [1, 2]
    assert schedule.stopped_epoch == 2
    assert module.trainer.current_epoch == 3  # epochs 0, 1, 2 ran


def test_max_epochs_caps_a_task_that_keeps_improving() -> None:
    schedule = PlateauSchedule(patience=1, lr_factor=2, lr_min=0.3)
    module = _fit_scripted([1.0, 0.9, 0.8, 0.7], schedule, max_epochs=4)
    assert module.epoch_lrs == [1.0] * 4
    assert schedule.stopped_epoch is None
    assert schedule.restored_epoch == 3


def test_state_dict_round_trip_continues_the_same_schedule() -> None:
    losses = [1.0, 2.0, 2.0, 2.0, 2.0]
    whole = PlateauSchedule(patience=3, lr_factor=2, lr_min=0.0, restore_best=False)
    _fit_scripted(losses, whole, max_epochs=5)
    first = PlateauSchedule(patience=3, lr_factor=2, lr_min=0.0, restore_best=False)
    _fit_scripted(losses[:2], first, max_epochs=2)
    continued = PlateauSchedule(patience=3, lr_factor=2, lr_min=0.0, restore_best=False)
    continued.load_state_dict(copy.deepcopy(first.state_dict()))
    assert (continued.wait, continued.best_loss, continued.lr) == (2, 1.0, 1.0)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
    module = Scripted(losses)
    for epoch, loss in enumerate(losses[2:], start=2):
        trainer.fit_loop.epoch_progress.current.completed = epoch
        continued.step(loss, trainer, module)
    assert continued.reductions == whole.reductions == [3]
    assert continued.lr == whole.lr == 0.5


@pytest.mark.parametrize(
    ("options", "key"),
    [({"patience": 0}, "patience"), ({"lr_factor": 1}, "lr_factor"), ({"lr_min": -1}, "lr_min")],
)
def test_bad_settings_are_refused_naming_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(PipelineConfigError, match=rf"callbacks\.plateau_schedule\.{key}"):
        PlateauSchedule(**options)


def test_a_missing_monitor_names_the_key_and_the_fix() -> None:
    schedule = PlateauSchedule(monitor="task_{task_id}/val/nothing")
    with pytest.raises(PipelineConfigError, match=r"monitors 'task_1/val/nothing'.*val/loss"):
        _fit_scripted([1.0], schedule, max_epochs=1)


def test_an_lr_scheduler_beside_the_schedule_is_refused() -> None:
    module = Scripted([1.0])
    module.configure_optimizers = lambda: {  # type: ignore[method-assign]
        "optimizer": (optimizer := torch.optim.SGD(module.parameters(), lr=1.0)),
        "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1),
    }
    trainer = quiet_trainer(max_epochs=1, callbacks=[PlateauSchedule()])
    with pytest.raises(PipelineConfigError, match="lr_scheduler=none"):
        trainer.fit(module, _loader(), _loader())


# The real algorithms.


def _data(seed: int, size: int = 48) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, INPUT_DIM, generator=generator)
    return TensorDataset(inputs, torch.randint(0, NUM_CLASSES, (size,), generator=generator))


def _model(name: str) -> HAT | WSN:
    torch.manual_seed(0)
    heads = HeadsTIL(FEATURE_DIM)
    sgd = functools.partial(torch.optim.SGD, lr=0.5)
    if name == "wsn":
        return WSN(WSNMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM), heads, sgd, mask_percentage=0.5)
    return HAT(HATMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM), heads, sgd)


class StateAtValidation(Callback):
    """Keeps a copy of the module's state and the monitored loss after every validation."""

    def __init__(self) -> None:
        self.states: list[dict[str, Tensor]] = []
        self.losses: list[float] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.states.append(
            {k: v.clone() for k, v in pl_module.state_dict().items() if isinstance(v, Tensor)}
        )
        self.losses.append(float(trainer.callback_metrics[f"task_{pl_module.task_id}/val/loss"]))


class BestAt(PlateauSchedule):
    """The schedule fed a scripted loss per epoch, so the best epoch is known in advance."""

    def __init__(self, losses: list[float], **options: Any) -> None:
        super().__init__(**options)
        self.scripted = losses

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.step(self.scripted[trainer.current_epoch], trainer, pl_module)


def _fit(model: HAT | WSN, task: int, schedule: PlateauSchedule, epochs: int) -> StateAtValidation:
    torch.manual_seed(task)
    model.setup_task_id(task, NUM_CLASSES)
    states = StateAtValidation()
    trainer = quiet_trainer(max_epochs=epochs, precision="64-true", callbacks=[states, schedule])
    data = _data(task)
    trainer.fit(model, DataLoader(data, batch_size=8), DataLoader(_data(100 + task), batch_size=16))
    return states


def _test_outputs(model: HAT | WSN, task: int) -> Tensor:
    model.eval()
    with torch.no_grad():
        logits, _ = model(_data(200 + task).tensors[0].double(), "test", task)
    return logits


@pytest.mark.parametrize("name", ["hat", "wsn"])
def test_restored_state_is_the_best_epochs_bit_for_bit(name: str) -> None:
    model = _model(name)
    schedule = PlateauSchedule(patience=2, lr_factor=2, lr_min=0.0)
    states = _fit(model, 1, schedule, epochs=6)
    best = min(range(len(states.losses)), key=lambda epoch: (states.losses[epoch], epoch))
    assert schedule.restored_epoch == best
    # Every parameter (weights, heads, HAT embedding, WSN scores); the masks that on_train_end
    # stores from them are checked below.
    for key, value in model.named_parameters():
        assert torch.equal(value, states.states[best][key]), key


@pytest.mark.parametrize("name", ["hat", "wsn"])
def test_no_forgetting_holds_through_a_restore_and_masks_come_from_the_restored_state(
    name: str,
) -> None:
    model = _model(name)
    _fit(model, 1, PlateauSchedule(patience=2, lr_factor=2, lr_min=0.0), epochs=3)
    after_task_1 = _test_outputs(model, 1)
    # Task 2's best epoch is its first of four: the end state is three epochs of training older.
    schedule = BestAt([0.1, 0.5, 0.6, 0.7], patience=5, lr_factor=2, lr_min=0.0)
    states = _fit(model, 2, schedule, epochs=4)
    assert schedule.restored_epoch == 0
    assert not torch.equal(
        states.states[0]["heads.heads.2.weight"], states.states[3]["heads.heads.2.weight"]
    )
    for key, value in model.named_parameters():
        assert torch.equal(value, states.states[0][key]), key
    assert torch.equal(_test_outputs(model, 1), after_task_1)
    if name == "wsn":
        # The stored task-2 subnetwork is the top half of the restored epoch's scores.
        stored = wsn_of(model.backbone).stored_mask(2)
        selected = wsn_of(model.backbone).get_mask("validation", mask_percentage=0.5)
        for kind in range(2):
            for layer, mask in stored[kind].items():
                assert torch.equal(mask, selected[kind][layer]), layer
    if name == "hat":
        # The stored task-2 mask is the binarised task-2 embedding of the restored epoch.
        stored = model.hat.stored_mask(2)
        for layer in stored:
            embedding = states.states[0][f"backbone.task_embedding.{layer}"]
            assert torch.equal(stored[layer], (embedding > 0).to(stored[layer].dtype)), layer
    # The restored task-2 model tests as the state of epoch 0 evaluates, and task 3 keeps it.
    after_task_2 = _test_outputs(model, 2)
    _fit(model, 3, BestAt([0.3, 0.2, 0.9], patience=5, lr_factor=2, lr_min=0.0), epochs=3)
    assert torch.equal(_test_outputs(model, 1), after_task_1)
    assert torch.equal(_test_outputs(model, 2), after_task_2)


def _with_schedule(overrides: tuple[str, ...]) -> list[str]:
    """Quick-run overrides with the HAT schedule, set to act within a few epochs: a high lr,
    patience 1, and a floor that the first division (0.3 / 3) falls below."""
    return [
        *(o for o in overrides if o != "callbacks=none"),
        "optimizer.lr=0.3",
        "callbacks=plateau_hat",
        "~callbacks.progress_bar",
        "callbacks.plateau_schedule.patience=1",
        "callbacks.plateau_schedule.lr_min=0.15",
    ]


class Interrupted(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


class StopAfterEpochs(Callback):
    """Raise :class:`Interrupted` in the middle of a fit: in its second epoch's first batch
    (the schedule cannot stop a task before: epoch 0 always improves on no loss)."""

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1:
            raise Interrupted


def acc_bytes(run_dir: Path) -> bytes:
    return (run_dir / "results" / "acc.csv").read_bytes()


def test_resume_with_the_schedule_ends_with_the_uninterrupted_acc_csv(
    run_clarena: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = _with_schedule(quick_run_overrides(3, max_epochs=6, train_batches=2))
    reference = run_clarena("example_clmain_hat", *overrides, output="reference")
    # The schedule acted: a task stopped at the floor, and the best state was restored.
    run_log = (reference / "clarena.log").read_text()
    assert "lr 0.1 below 0.15, task stopped" in run_log
    assert "restored the state of epoch" in run_log
    make_trainer = cl.make_trainer

    def make(cfg: Any, run_dir: Path, version: str | None) -> Trainer:
        trainer = make_trainer(cfg, run_dir, version)
        if version == "task_3":
            trainer.callbacks.append(StopAfterEpochs())
        return trainer

    with monkeypatch.context() as patch:
        patch.setattr(cl, "make_trainer", make)
        with pytest.raises(Interrupted):
            run_clarena("example_clmain_hat", *overrides, output="interrupted")
    interrupted: Path = reference.parent / "interrupted"
    assert acc_bytes(interrupted).count(b"\n") == 3
    cli.main(["experiment=example_clmain_hat", *overrides, f"resume={interrupted}"])
    assert acc_bytes(interrupted) == acc_bytes(reference)


def test_reduce_lr_on_plateau_steps_on_each_tasks_validation_loss() -> None:
    torch.manual_seed(0)
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=0, factor=0.5)
    sgd = functools.partial(torch.optim.SGD, lr=0.5)
    model = Finetuning(CLMLP(INPUT_DIM, [16], FEATURE_DIM), HeadsTIL(FEATURE_DIM), sgd, plateau)
    for task in (1, 2):
        model.setup_task_id(task, NUM_CLASSES)
        states = StateAtValidation()
        trainer = quiet_trainer(max_epochs=4, callbacks=[states])
        trainer.fit(
            model, DataLoader(_data(task), batch_size=8), DataLoader(_data(9), batch_size=16)
        )
        (config,) = trainer.lr_scheduler_configs
        assert config.monitor == f"task_{task}/val/loss"
        # It saw every epoch's validation loss, and halved the lr once per non-improvement;
        # each task starts again from the configured lr.
        assert config.scheduler.best == min(states.losses)
        worse = sum(
            loss >= min(states.losses[:epoch]) * (1 - 1e-4)
            for epoch, loss in enumerate(states.losses)
            if epoch
        )
        assert trainer.optimizers[0].param_groups[0]["lr"] == 0.5 * 0.5**worse


def test_reduce_lr_on_plateau_config_runs(run_clarena: Any) -> None:
    overrides = quick_run_overrides(2, max_epochs=2, train_batches=2)
    run_dir = run_clarena("example_clmain_train", *overrides, "lr_scheduler=reduce_lr_on_plateau")
    assert (run_dir / "results" / "acc.csv").read_bytes().count(b"\n") == 3


@pytest.mark.parametrize(
    ("experiment", "overrides"),
    [
        ("example_clmain_train", []),
        ("example_clmain_train", ["cl_algorithm=independent"]),
        ("example_clmain_adahat", []),
        ("example_clmain_fgadahat", []),
        ("example_clmain_wsn", ["callbacks.plateau_schedule.lr_factor=2"]),
        ("example_clmain_dil", []),
        ("example_mtl_train", ["callbacks.plateau_schedule.monitor=val/loss"]),
        ("example_stl_train", ["callbacks.plateau_schedule.monitor=val/loss"]),
    ],
)
def test_the_schedule_runs_with_every_algorithm(
    run_clarena: Any, experiment: str, overrides: list[str]
) -> None:
    cl = "_clmain_" in experiment
    quick = quick_run_overrides(2 if cl else None, max_epochs=4)
    # MTL and STL write no plots, so they have no plot keys to turn off.
    quick = tuple(o for o in quick if cl or not o.startswith("metrics."))
    run_dir = run_clarena(experiment, *_with_schedule(quick), *overrides)
    run_log = (run_dir / "clarena.log").read_text()
    assert "restored the state of epoch" in run_log
    assert (run_dir / "results" / "summary.json").is_file()
