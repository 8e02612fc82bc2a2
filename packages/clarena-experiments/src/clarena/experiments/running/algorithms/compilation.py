"""Compiling an algorithm's backbone once, before Lightning moves it to the device and wraps it."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule
from torch import nn
from typing_extensions import override


class BackboneCompilation(LightningModule):
    """Compiles the backbone in place (``backbone.compile(**options)``) once, on request.

    :meth:`compile_backbone` only records the request; :meth:`configure_model` compiles. Lightning
    calls that hook in every ``fit`` and ``test`` after ``setup`` and before the strategy moves
    the model to its device and wraps it (DDP), so the compiled module is the one DDP wraps, and
    compiling stays lazy (the first forward traces). A CL run fits one ``Trainer`` per task: each
    backbone is compiled in the first run that uses it and never again, and the backbone's own
    ``compile`` keeps it from recompiling across tasks.

    ``backbone.compile`` changes no parameter or buffer name: a compiled model's ``state_dict``
    equals the eager one's, so saved models load into an eager model and back.
    """

    #: Keyword arguments of ``backbone.compile``; ``None`` when not compiling.
    compile_options: dict[str, Any] | None = None

    def compile_backbone(self, **options: Any) -> None:
        """Compile the backbone in the next ``fit``/``test``, with ``torch.compile`` ``options``.

        ``fullgraph=True`` unless ``options`` say otherwise: a graph break is an error rather
        than a silently slower run.
        """
        self.compile_options = {"fullgraph": True, **options}

    def backbones_to_compile(self) -> list[nn.Module]:
        """The backbones the next ``fit``/``test`` runs (override when not ``self.backbone``)."""
        return [self.backbone]

    @override
    def configure_model(self) -> None:
        if self.compile_options is None:
            return
        # A plain list, not registered as submodules (the backbones already are); created here
        # so that algorithms need no extra call in their constructors.
        compiled: list[nn.Module] = self.__dict__.setdefault("_compiled_backbones", [])
        for backbone in self.backbones_to_compile():
            if not any(backbone is done for done in compiled):
                backbone.compile(**self.compile_options)
                compiled.append(backbone)
