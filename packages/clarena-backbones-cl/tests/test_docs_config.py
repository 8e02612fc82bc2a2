"""The published docs' CLMLP config instantiates verbatim and feeds task-incremental heads."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from clarena.cl import CLMLP, HeadsTIL

# Verbatim from /work/shared/seed/backbone-network-docs.txt, "configs/backbone/clmlp.yaml".
CLMLP_YAML = """\
_target_: clarena.backbones.CLMLP
input_dim: 784
hidden_dims: [256, 100]
output_dim: 64
batch_normalisation: true
"""


def test_docs_clmlp_yaml_builds_a_batch_normalised_clmlp():
    backbone = instantiate(OmegaConf.create(CLMLP_YAML))
    assert type(backbone) is CLMLP
    assert backbone.input_dim == 784
    assert backbone.hidden_dims == [256, 100]
    assert backbone.output_dim == 64
    assert backbone.batch_normalization is True
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [n.num_features for n in norms] == [256, 100, 64]


def test_docs_clmlp_feeds_til_heads_over_three_tasks():
    torch.manual_seed(0)
    backbone = instantiate(OmegaConf.create(CLMLP_YAML))
    heads = HeadsTIL(input_dim=backbone.output_dim)
    num_classes = {1: 2, 2: 5, 3: 10}
    images = torch.randn(6, 1, 28, 28)
    for task_id, classes in num_classes.items():
        backbone.setup_task_id(task_id)
        heads.setup_task_id(task_id, classes)
        feature, activations = backbone(images, stage="train")
        assert tuple(feature.shape) == (6, 64)
        assert set(activations) == {"fc/0", "fc/1", "fc/2"}
        logits = heads(feature)
        assert tuple(logits.shape) == (6, classes)
        loss = nn.functional.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
        loss.backward()
    assert backbone.processed_task_ids == [1, 2, 3]
    assert heads.task_ids == [1, 2, 3]
    backbone.eval()
    with torch.no_grad():
        feature, _ = backbone(images, stage="test", task_id=1)
        for task_id, classes in num_classes.items():
            assert tuple(heads(feature, task_id).shape) == (6, classes)
