"""clarena experiments: the ``clarena`` command, Lightning algorithms, datasets and pipelines.

Run ``clarena experiment=example_clmain_train`` to train a continual-learning experiment on the
embedded digits data; see the package README for the config groups and outputs.
"""

from __future__ import annotations

from clarena.experiments._moved import install as _install_moved_names
from clarena.experiments._version import __version__

_install_moved_names()

__all__ = ["__version__"]
