"""The paper-setup experiment configs compose with the values their papers publish.

The expected values are the ones the configs' comments cite: HAT (Serra et al., 2018, Sec. 4 and
4.3; github.com/joansj/hat), WSN (Kang et al., 2022, Appendix A and Table 5;
github.com/ihaeyong/WSN) and the AdaHAT first author's configs. Running each config on synthetic
files is in ``test_local_datasets.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from clarena.experiments.cli import shipped_config_dir

HAT: dict[str, Any] = {
    "optimizer._target_": "torch.optim.SGD",
    "optimizer.lr": 0.05,
    "cl_dataset.batch_size": 64,
    "cl_algorithm.s_max": 400,
    "cl_algorithm.mask_sparsity_reg_factor": 0.75,
    "cl_algorithm.clamp_threshold": 50,
    "trainer.max_epochs": 200,
    # hat.py: lr_patience=5, lr_factor=3, lr_min=1e-4, best weights restored
    "callbacks.plateau_schedule.patience": 5,
    "callbacks.plateau_schedule.lr_factor": 3,
    "callbacks.plateau_schedule.lr_min": 1e-4,
    "callbacks.plateau_schedule.restore_best": True,
    "lr_scheduler": {},
    "batch_norm_statistics": "running",
}
WSN: dict[str, Any] = {
    "optimizer._target_": "torch.optim.Adam",
    "optimizer.lr": 0.001,
    "cl_algorithm.mask_percentage": 0.5,
    # main_wsn_*.py: lr_patience=6, lr_factor=2, lr_min=1e-6, best weights restored
    "callbacks.plateau_schedule.patience": 6,
    "callbacks.plateau_schedule.lr_factor": 2,
    "callbacks.plateau_schedule.lr_min": 1e-6,
    "callbacks.plateau_schedule.restore_best": True,
    "lr_scheduler": {},
    "batch_norm_statistics": "running",
}
ADAHAT: dict[str, Any] = {
    "cl_algorithm.adjustment_intensity": 1e-6,
    "cl_algorithm.s_max": 400,
    "cl_algorithm.epsilon": 0.1,
}
NO_AUGMENTATION: dict[str, Any] = {
    "cl_dataset.crop_padding": 0,
    "cl_dataset.horizontal_flip": False,
}

PUBLISHED: dict[str, dict[str, Any]] = {
    "hat_pmnist": HAT
    | {
        "cl_dataset.num_tasks": 10,
        "backbone.hidden_dims": [2000],
        "backbone.output_dim": 2000,
        "backbone.batch_normalization": False,
        "backbone.dropout": 0.5,
    },
    "hat_split_cifar100": HAT
    | NO_AUGMENTATION
    | {"cl_dataset.num_tasks": 10, "cl_dataset.val_fraction": 0.15},
    "adahat_pmnist": ADAHAT
    | {
        "cl_dataset.num_tasks": 20,
        "cl_dataset.batch_size": 128,
        "cl_algorithm.mask_sparsity_reg_factor": 0.1,
        "backbone.hidden_dims": [256, 100],
        "backbone.output_dim": 64,
    },
    "adahat_split_cifar100": ADAHAT
    | {"cl_dataset.num_tasks": 20, "cl_dataset.batch_size": 64, "backbone.output_dim": 512},
    "wsn_pmnist": WSN
    | {
        "cl_dataset.num_tasks": 10,
        "cl_dataset.batch_size": 10,
        "cl_dataset.val_fraction": 0.1,
        "trainer.max_epochs": 5,
        "backbone.hidden_dims": [100],
        "backbone.output_dim": 100,
        "backbone.bias": False,
    },
    "wsn_split_cifar100": WSN
    | NO_AUGMENTATION
    | {"cl_dataset.num_tasks": 10, "cl_dataset.batch_size": 64, "cl_dataset.val_fraction": 0.05},
    "wsn_split_tinyimagenet": WSN
    | NO_AUGMENTATION
    | {
        "cl_dataset.num_tasks": 40,
        "cl_dataset.batch_size": 10,
        "cl_dataset.val_fraction": 0.05,
        "trainer.max_epochs": 10,
    },
}


def _select(config: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        config = config[key]
    return config


@pytest.fixture
def composed() -> Iterator[Any]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(shipped_config_dir()), version_base=None):
        yield compose
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("experiment", sorted(PUBLISHED))
def test_paper_setup_composes_with_the_published_values(composed: Any, experiment: str) -> None:
    config = composed("entrance", [f"experiment={experiment}"])
    plain = OmegaConf.to_container(config, resolve=False)
    found = {key: _select(plain, key) for key in PUBLISHED[experiment]}
    assert found == PUBLISHED[experiment]
    assert config.train_tasks == config.cl_dataset.num_tasks


def test_every_paper_setup_is_checked_here() -> None:
    directory = shipped_config_dir() / "experiment"
    shipped = {path.stem for path in directory.glob("*.yaml")}
    assert {name for name in shipped if not name.startswith("example_")} == set(PUBLISHED)


@pytest.mark.parametrize("experiment", sorted(PUBLISHED))
def test_every_uncertain_mark_says_why(experiment: str) -> None:
    text = (shipped_config_dir() / "experiment" / f"{experiment}.yaml").read_text()
    bare = [line for line in text.splitlines() if re.search(r"uncertain(?!:)", line)]
    assert bare == []
