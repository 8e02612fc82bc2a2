"""Any timm model as a backbone, by name: ``TimmBackbone('vit_tiny_patch16_224', ...)``.

The model is built with ``timm.create_model(model_name, pretrained=False, num_classes=0, ...)``
and its modules become the backbone's own: parameter names and ``state_dict`` keys are timm's, so
a timm checkpoint loads unchanged. Every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` is a weighted
layer, named by its module path with ``/`` (``blocks/0/attn/qkv``), and its computation runs
through :meth:`~clarena.backbones.Backbone.layer_forward` and its unit outputs through
:meth:`~clarena.backbones.Backbone.unit_gate`, where mask methods act.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from clarena.backbones import _timm_graph, _timm_routing
from clarena.backbones._pretrained import read_state_dict
from clarena.backbones.base import Backbone, check_batch

_OWN_ARGUMENTS = ("model_name", "output_dim", "pretrained_weights", "img_size", "in_chans")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


class TimmBackbone(Backbone):
    """A timm model (its classifier removed) as a feature extractor.

    The model's modules are registered on the backbone itself, so ``backbone.blocks[0]``,
    ``backbone.state_dict()`` and ``backbone.named_parameters()`` use timm's names; the timm
    model object that runs them is :attr:`timm_model`.

    Weighted layers are every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` the forward pass calls
    (attention ``qkv`` and ``proj``, MLP ``fc1``/``fc2``, patch-embedding, depthwise and
    squeeze-excitation convolutions ...), in forward order, plus ``proj`` when ``output_dim``
    differs from timm's feature width. Each layer's unit outputs are gated after the
    batch norm that directly consumes them when there is one (convolution → batch norm:
    between the norm and its activation, also inside timm's ``BatchNormAct2d``), otherwise on the
    layer's output (also before a layer or group norm, whose statistics mix the channels). ``unit_gate`` always receives the units in dimension 1: ``(batch, units)``,
    ``(batch, units, height, width)`` or, for a linear layer on tokens, ``(batch, units,
    tokens)``. The activations the forward pass returns are the tensors the gates return, in
    that layout; an in-place activation that follows (timm's ``ReLU(inplace=True)``) shows in
    them, so they are post-activation there and pre-activation elsewhere.

    The layer graph (:meth:`input_layer_names`, where each gate goes) comes from a ``torch.fx``
    trace of the timm model. A layer's input layers are those whose gated units zero its input
    channels: a layer norm, attention, an activation with ``f(0) != 0`` or an added parameter
    (position embedding, class token) on the way leaves them empty (every input channel counts
    as used, as the raw input does), which keeps a mask method's input-unit conditioning sound; :attr:`trace_error` says why when a model cannot be traced (its
    weighted layers are then listed in module order, with no input layers, and every gate sits on
    its layer's output) and :meth:`layer_graph_notes` lists the layers whose inputs the trace
    could not map.

    Args:
        model_name: a timm model name (``timm.list_models()``): ``vit_tiny_patch16_224``,
            ``convnext_atto``, ``efficientnet_b0``, ``resnet50d``, ``mobilenetv3_small_100`` ...
        output_dim: width of the output feature; ``None`` keeps timm's (``num_features``, or
            ``head_hidden_size`` for models with a pre-logits layer). Another width adds a linear
            projection ``proj`` as the last weighted layer.
        pretrained_weights: ``None`` (random initialisation), a local checkpoint (a state dict
            in ``.pt``/``.pth``/``.safetensors`` with timm's parameter names; classifier keys are
            dropped; works offline), or a timm pretrained tag (``augreg_in21k`` or
            ``vit_tiny_patch16_224.augreg_in21k``; needs the network or a local Hugging Face
            cache).
        img_size: input image size, passed to models that take it (ViTs); convolutional
            networks take any size and ignore it.
        in_chans: input channels (timm's default, 3, when ``None``).
        timm_kwargs: further keyword arguments of the timm model (``drop_path_rate``,
            ``global_pool`` ...).
    """

    #: The layer graph leaves a layer's input layers empty wherever an operation on the way can
    #: turn a gated (zero) channel non-zero (see :class:`_timm_graph._ZeroSources`), so a mask
    #: method need not require every activation to map 0 to 0.
    zero_preserving_graph: bool = True
    #: Per-task batch norms a mask method makes start from this backbone's (pretrained) ones.
    per_task_norms_keep_state: bool = True

    def __init__(
        self,
        model_name: str,
        output_dim: int | None = None,
        pretrained_weights: str | os.PathLike[str] | None = None,
        img_size: int | tuple[int, int] | None = None,
        in_chans: int | None = None,
        **timm_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        _check_own_argument_spelling(owner, timm_kwargs)
        timm_kwargs = {key: _plain(value) for key, value in timm_kwargs.items()}
        tag = _pretrained_tag(model_name, pretrained_weights)
        model = _create_model(owner, model_name, tag, img_size, in_chans, timm_kwargs)
        feature_width: Any = getattr(model, "head_hidden_size", None) or model.num_features
        width = int(feature_width)
        Backbone.__init__(self, width if output_dim is None else output_dim)
        if "proj" in model._modules or "proj" in model._parameters:
            raise ValueError(f"{owner}: timm model '{model_name}' has a top-level 'proj' already.")
        # The backbone and the timm model share one set of parameters, buffers and children, so
        # names are timm's and anything done to one (.to(), load_state_dict) is seen by the other.
        for key in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
            self.__dict__[key] = model.__dict__[key]
        self.__dict__["_timm_model"] = model
        self.model_name: str = model_name
        self.trunk_width: int = width
        self._activation_sink: dict[str, Tensor] = {}
        if pretrained_weights is not None and tag is None:
            _load_local_checkpoint(self, model, pretrained_weights)

        graph = _timm_graph.analyse(model)
        self.trace_error: str | None = graph.error
        self._graph_notes = {path.replace(".", "/"): note for path, note in graph.notes.items()}
        modules = dict(model.named_modules())
        #: Weighted layer → module path (with ``.``) of the batch norm its gate follows.
        self.gate_norm_paths: dict[str, str] = {
            path.replace(".", "/"): norm for path, norm in graph.gate_norms.items()
        }
        for path in graph.order:
            name = path.replace(".", "/")
            self._add_weighted_layer(name, tuple(p.replace(".", "/") for p in graph.inputs[path]))
            self._route(modules, path, name, graph.gate_norms.get(path))
        self.input_channels: int = _timm_graph.input_width(modules[graph.order[0]])
        self.input_size: tuple[int, int] | None = _strict_image_size(model)

        self.proj: nn.Linear | None = None
        self._feature_inputs = tuple(p.replace(".", "/") for p in graph.feature_inputs)
        if self.output_dim != width:
            self.proj = nn.Linear(width, self.output_dim)
            self._add_weighted_layer(
                "proj", tuple(p.replace(".", "/") for p in graph.feature_sources)
            )
        self.normalization_layer_names: list[str] = [
            path.replace(".", "/")
            for path, m in modules.items()
            if path
            and isinstance(m, _timm_graph.normalization_types())
            and any(True for _ in m.parameters(recurse=False))
        ]
        self._uncovered = self._find_uncovered()

    @property
    def timm_model(self) -> nn.Module:
        """The timm model whose ``forward`` this backbone runs (it shares the backbone's modules)."""
        model: nn.Module = self.__dict__["_timm_model"]
        return model

    def _route(
        self, modules: dict[str, nn.Module], path: str, name: str, norm_path: str | None
    ) -> None:
        layer = modules[path]
        if norm_path is None:
            gate_dim = -1 if isinstance(layer, nn.Linear) else 1
            _timm_routing.route(layer, "RoutedLayer", self, name, gate_dim)
            return
        _timm_routing.route(layer, "RoutedLayer", self, name, None)
        norm = modules[norm_path]
        gate_dim = _timm_graph.norm_units_dim(norm)
        if _timm_routing.is_norm_act(norm):
            drop = norm.get_submodule("drop")
            _timm_routing.route(drop, "GatedDrop", self, name, gate_dim)
        else:
            _timm_routing.route(norm, "GatedNorm", self, name, gate_dim)

    def _find_uncovered(self) -> tuple[str, ...]:
        covered: set[int] = set()
        for name in [*self.weighted_layer_names, *self.normalization_layer_names]:
            covered.update(map(id, self.get_submodule(name.replace("/", ".")).parameters()))
        return tuple(
            name
            for name, parameter in self.named_parameters()
            if parameter.requires_grad and id(parameter) not in covered
        )

    def uncovered_parameter_names(self) -> tuple[str, ...]:
        """Trainable parameters of the timm model in no weighted or normalisation layer.

        For example a ViT's ``cls_token`` and ``pos_embed``, ConvNeXt's layer-scale ``gamma``,
        relative-position tables, and the parameters of layers the forward pass never calls. A
        mask method that cannot protect these refuses the model by these names.
        """
        return self._uncovered

    def layer_graph_notes(self) -> dict[str, str]:
        """Weighted layers whose :meth:`input_layer_names` is empty although layers feed them,
        with the reason (the trace failed, the channels are not aligned one-to-one as after
        attention or a concatenation, or the layer sits in a module ``torch.fx`` cannot enter).
        A mask method conditioning on input units treats those inputs as unknown."""
        return dict(self._graph_notes)

    def feature_layer_names(self) -> tuple[str, ...]:
        """Weighted layers whose unit outputs reach the feature: ``proj`` when there is one."""
        return ("proj",) if self.proj is not None else self._feature_inputs

    def train(self, mode: bool = True) -> TimmBackbone:
        """Set training mode on the backbone, its modules and the timm model object."""
        super().train(mode)
        self.timm_model.training = mode
        return self

    def _gate_units(self, layer_name: str, hidden: Tensor, units_dim: int) -> Tensor:
        """:meth:`unit_gate` with the units moved to dimension 1; records the activation."""
        if units_dim == 1 or hidden.ndim == 2:
            gated = self.unit_gate(layer_name, hidden)
            self._activation_sink[layer_name] = gated
            return gated
        gated = self.unit_gate(layer_name, hidden.movedim(units_dim, 1))
        self._activation_sink[layer_name] = gated
        return gated.movedim(1, units_dim)

    def _features(self, input: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        check_batch(input, type(self).__name__)
        self._check_input(input)
        self._activation_sink.clear()
        x = self.timm_model(input)
        if x.ndim != 2:
            raise ValueError(
                f"{type(self).__name__}('{self.model_name}'): the timm model returned shape "
                f"{tuple(x.shape)}, not a pooled (batch, features) feature; keep its global "
                f"pooling (do not pass global_pool='')."
            )
        if self.proj is not None:
            x = self._gate_units("proj", self.layer_forward("proj", self.proj, x), 1)
        activations = dict(self._activation_sink)
        self._activation_sink.clear()
        return x, activations

    def _check_input(self, input: Tensor) -> None:
        size = self.input_size
        channels = self.input_channels
        spatial_ok = size is None or tuple(input.shape[2:]) == size
        if input.ndim == 4 and input.shape[1] == channels and spatial_ok:
            return
        expected = f"{size[0]}, {size[1]}" if size is not None else "height, width"
        raise ValueError(
            f"{type(self).__name__}('{self.model_name}') expects images of shape (batch, "
            f"{channels}, {expected}); got shape {tuple(input.shape)}. Set in_chans"
            + (" and img_size" if size is not None else "")
            + " to your images'."
        )


def _plain(value: Any) -> Any:
    """``value`` with config containers (Hydra's ``ListConfig``/``DictConfig``) made plain lists
    and dicts: timm's constructors index and split them as Python sequences."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return value


def _check_own_argument_spelling(owner: str, timm_kwargs: dict[str, Any]) -> None:
    for key in timm_kwargs:
        nearest = difflib.get_close_matches(key, _OWN_ARGUMENTS, n=1, cutoff=0.8)
        if nearest:
            raise TypeError(
                f"{owner}() got an unknown argument '{key}'. Did you mean '{nearest[0]}'? "
                f"{owner} takes: {', '.join(_OWN_ARGUMENTS)} and the timm model's own arguments."
            )


def _pretrained_tag(model_name: str, weights: str | os.PathLike[str] | None) -> str | None:
    """The full timm name (``model.tag``) when ``weights`` is a pretrained tag, else ``None``."""
    if weights is None or not isinstance(weights, str) or Path(weights).is_file():
        return None
    if os.sep in weights or weights.endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(
            f"pretrained_weights: no checkpoint file at '{weights}'. Give an existing local "
            f"checkpoint path or a timm pretrained tag such as '{model_name}.<tag>'."
        )
    if "." not in weights:
        return f"{model_name}.{weights}"
    if weights.split(".", 1)[0] != model_name.split(".", 1)[0]:
        raise ValueError(
            f"pretrained_weights '{weights}' is a tag of another model than model_name "
            f"'{model_name}'; give '{model_name}.<tag>' or the tag alone."
        )
    return weights


def _create_model(
    owner: str,
    model_name: str,
    tag: str | None,
    img_size: int | tuple[int, int] | None,
    in_chans: int | None,
    timm_kwargs: dict[str, Any],
) -> nn.Module:
    import timm

    if not isinstance(model_name, str) or not timm.is_model(model_name.split(".", 1)[0]):
        nearest = difflib.get_close_matches(str(model_name), timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(nearest)}?" if nearest else ""
        raise ValueError(
            f"{owner}: timm has no model '{model_name}'.{hint} timm.list_models('*pattern*') "
            f"lists the names."
        )
    kwargs = dict(timm_kwargs, num_classes=0)
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    name = tag if tag is not None else model_name
    try:
        try:
            with_size = kwargs if img_size is None else dict(kwargs, img_size=img_size)
            return timm.create_model(name, pretrained=tag is not None, **with_size)
        except TypeError as error:
            if img_size is None or "img_size" not in str(error):
                raise
            # Convolutional networks take any image size and have no img_size argument.
            return timm.create_model(name, pretrained=tag is not None, **kwargs)
    except TypeError as error:
        raise TypeError(
            f"{owner}: timm model '{model_name}' does not take the arguments given ({error}). "
            f"Pass only model_name, output_dim, pretrained_weights, img_size, in_chans and "
            f"arguments of the timm model."
        ) from error
    except (RuntimeError, OSError) as error:
        if tag is None:
            raise
        raise RuntimeError(
            f"pretrained_weights: timm could not load pretrained tag '{tag}' ({error}). Tags need "
            f"the network or a local Hugging Face cache; offline, save the weights once with "
            f"torch.save(timm_model.state_dict(), path) and pass that path."
        ) from error


def _load_local_checkpoint(
    backbone: TimmBackbone, model: nn.Module, source: str | os.PathLike[str]
) -> None:
    """Load a timm-named state dict into the timm model, strictly; classifier keys dropped."""
    config: Any = getattr(model, "pretrained_cfg", None) or {}
    classifier = config.get("classifier") or ()
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    own = model.state_dict()
    state = {
        key: value
        for key, value in read_state_dict(source).items()
        if key in own or not key.startswith(tuple(f"{c}." for c in classifiers))
    }
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    )
    problems = [
        f"{what}: {', '.join(keys[:5])}{f' and {len(keys) - 5} more' if len(keys) > 5 else ''}"
        for what, keys in (
            ("missing from the checkpoint", missing),
            ("not in the model", unexpected),
            ("shape differs", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"pretrained_weights '{source}' does not fit timm model '{backbone.model_name}' "
            f"({'; '.join(problems)}). Check model_name, img_size and in_chans against the "
            f"checkpoint, or give a timm tag, which resizes position embeddings."
        )
    model.load_state_dict(state, strict=True)


def _strict_image_size(model: nn.Module) -> tuple[int, int] | None:
    """The image size a patch embedding insists on (ViTs without dynamic size), else ``None``."""
    for module in model.modules():
        size = getattr(module, "img_size", None)
        if (
            getattr(module, "strict_img_size", False)
            and not getattr(module, "dynamic_img_size", False)
            and isinstance(size, tuple | list)
            and len(size) == 2
        ):
            return int(size[0]), int(size[1])
    return None
