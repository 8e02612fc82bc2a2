"""Every core YAML example of the published docs instantiates verbatim.

The blocks are copied from the "Configure Backbone Network" page of the CLArena docs
(shared/seed/backbone-network-docs.txt, MTL and STL sections, ``configs/backbone/mlp.yaml``).
The CL section's ``clmlp.yaml`` targets ``CLMLP`` from clarena-backbones-cl and is tested there.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from clarena.backbones import MLP

# Docs, "Configure Backbone Network (MTL)": configs/backbone/mlp.yaml
MTL_MLP_YAML = """\
_target_: clarena.backbones.MLP
input_dim: 784
hidden_dims: [256, 100]
output_dim: 64
batch_normalisation: True
"""

# Docs, "Configure Backbone Network (STL)": configs/backbone/mlp.yaml
STL_MLP_YAML = """\
_target_: clarena.backbones.MLP
input_dim: 784
hidden_dims: [256, 100]
output_dim: 64
batch_normalisation: true
"""


@pytest.mark.parametrize("yaml_text", [MTL_MLP_YAML, STL_MLP_YAML], ids=["MTL", "STL"])
def test_docs_mlp_yaml_instantiates_verbatim(yaml_text):
    backbone = instantiate(OmegaConf.create(yaml_text))
    assert type(backbone) is MLP
    assert backbone.hidden_dims == [256, 100]
    feature, activations = backbone(torch.randn(5, 1, 28, 28), stage="train")
    assert feature.shape == (5, 64)
    assert list(activations) == ["fc/0", "fc/1", "fc/2"]


@pytest.mark.parametrize("yaml_text", [MTL_MLP_YAML, STL_MLP_YAML], ids=["MTL", "STL"])
def test_docs_batch_normalisation_key_is_not_ignored(yaml_text):
    backbone = instantiate(OmegaConf.create(yaml_text))
    assert backbone.batch_normalization is True
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [m.num_features for m in norms] == [256, 100, 64]
