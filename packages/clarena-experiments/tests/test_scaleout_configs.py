"""The trainer configs for DDP and the SLURM launcher config compose and build what they say."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy

from clarena.experiments.cli import shipped_config_dir


@pytest.fixture
def composed() -> Iterator[object]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(shipped_config_dir()), version_base=None):
        yield compose
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def test_ddp_trainer_configs(composed: object) -> None:
    ddp = composed("entrance", ["experiment=example_clmain_hat", "trainer=ddp"]).trainer
    assert (ddp.accelerator, ddp.devices, ddp.num_nodes) == ("gpu", -1, 1)
    strategy = instantiate(ddp.strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._process_group_backend == "nccl"
    assert strategy._ddp_kwargs == {"find_unused_parameters": True}

    multinode = composed("entrance", ["experiment=example_clmain_hat", "trainer=ddp_multinode"])
    assert (multinode.trainer.num_nodes, multinode.trainer.devices) == (2, 4)
    assert multinode.trainer.strategy == ddp.strategy

    cpu = composed("entrance", ["experiment=example_clmain_hat", "trainer=ddp_cpu"]).trainer
    trainer = instantiate(cpu, logger=False, callbacks=[])
    assert (trainer.world_size, trainer.num_devices) == (2, 2)
    assert trainer.strategy._process_group_backend == "gloo"
    assert trainer.strategy._ddp_kwargs == {"find_unused_parameters": True}


def test_slurm_launcher_config_builds_the_submitit_slurm_launcher(composed: object) -> None:
    cfg = composed(
        "entrance",
        [
            "experiment=example_clmain_hat",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.tasks_per_node=4",
        ],
        return_hydra_config=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert (launcher.timeout_min, launcher.nodes, launcher.tasks_per_node) == (240, 1, 4)
    assert (launcher.gpus_per_node, launcher.partition, launcher.max_num_timeout) == (1, "gpu", 0)
    HydraConfig.instance().set_config(cfg)  # the launcher's paths interpolate hydra.sweep.dir
    built = instantiate(launcher)
    assert type(built).__name__ == "SlurmLauncher"
    assert built.params["partition"] == "gpu"
    assert built.params["submitit_folder"].endswith("/.submitit/%j")
