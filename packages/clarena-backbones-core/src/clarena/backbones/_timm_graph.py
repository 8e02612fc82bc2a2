"""The weighted-layer graph of a timm model, read from a ``torch.fx`` trace.

Weighted layers (every ``nn.Linear`` and ``nn.Conv1d/2d/3d``) and normalisation layers are traced
as leaves, so the graph shows which weighted layers feed which, in forward order, and which
normalisation directly consumes a layer's output (where its unit gate goes). timm's own
``register_notrace_module`` / ``register_notrace_function`` registrations are honoured.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

#: Modules whose computation a mask method routes: the weighted layers.
WEIGHTED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Shape-only operations a layer's output may pass through before the normalisation consuming it
#: (ConvNeXt permutes to channels-last before its LayerNorm; a patch embedding flattens).
_LAYOUT_METHODS = frozenset({"permute", "transpose", "contiguous", "flatten"})
_LAYOUT_FUNCTIONS = frozenset({torch.permute, torch.transpose, torch.flatten})


def normalization_types() -> tuple[type[nn.Module], ...]:
    """Normalisation module classes: torch's batch/instance, layer, group and RMS norms, and
    timm's norms that do not subclass them (``RmsNorm``, ``SimpleNorm`` ...)."""
    import timm.layers.norm as timm_norm

    types: list[type[nn.Module]] = [
        nn.modules.batchnorm._NormBase,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.RMSNorm,
        nn.LocalResponseNorm,
    ]
    for name in ("RmsNorm", "RmsNorm2d", "SimpleNorm", "SimpleNorm2d", "FrozenBatchNorm2d"):
        cls = getattr(timm_norm, name, None)
        if isinstance(cls, type):
            types.append(cls)
    import timm.layers.norm_act as timm_norm_act

    frozen = getattr(timm_norm_act, "FrozenBatchNormAct2d", None)
    if isinstance(frozen, type):
        types.append(frozen)
    return tuple(types)


def per_channel_norm_types() -> tuple[type[nn.Module], ...]:
    """Normalisations whose statistics and affine transform act on each channel alone: batch and
    instance norms (timm's ``BatchNormAct2d`` and frozen batch norms included)."""
    return tuple(
        t
        for t in normalization_types()
        if issubclass(t, nn.modules.batchnorm._NormBase) or "BatchNorm" in t.__name__
    )


def units(layer: nn.Module) -> int:
    """Output units of a weighted layer (``out_features`` / ``out_channels``)."""
    width: Any = getattr(layer, "out_features", None) or layer.out_channels
    return int(width)


def input_width(layer: nn.Module) -> int:
    """Input channels of a weighted layer (``in_features`` / ``in_channels``)."""
    width: Any = getattr(layer, "in_features", None) or layer.in_channels
    return int(width)


def norm_width(norm: nn.Module) -> int | None:
    """Channels a normalisation layer normalises per unit, or ``None`` when not one axis."""
    for attribute in ("num_features", "num_channels"):
        value = getattr(norm, attribute, None)
        if isinstance(value, int):
            return value
    shape = getattr(norm, "normalized_shape", None)
    if isinstance(shape, tuple | list) and len(shape) == 1:
        return int(shape[0])
    return None


def norm_units_dim(norm: nn.Module) -> int:
    """The dimension holding a normalisation layer's units in its output: 1 for batch and group
    norms and timm's ``...2d`` layer/RMS norms (channels first), -1 for layer/RMS norms."""
    if isinstance(norm, nn.modules.batchnorm._NormBase | nn.GroupNorm):
        return 1
    return 1 if "2d" in type(norm).__name__.lower() else -1


@dataclass
class LayerGraph:
    """What the trace tells about a model's weighted layers (module paths with ``.``).

    Attributes:
        order: weighted layers in forward order (first call).
        inputs: per layer, the weighted layers whose unit outputs reach its input channels.
        notes: per layer whose :attr:`inputs` is left empty although other layers feed it, why
            (channels not aligned one-to-one, or hidden inside a module the trace cannot enter).
        gate_norms: per layer, the normalisation module consuming its output (gate goes there).
        feature_inputs: the weighted layers reaching the model's output (the pooled feature).
        feature_sources: the weighted layers whose gated units zero the feature's channels
            (see :class:`_ZeroSources`); empty when a layer norm or the like comes between.
        error: why the model could not be traced; ``None`` when it was.
    """

    order: list[str] = field(default_factory=list)
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    gate_norms: dict[str, str] = field(default_factory=dict)
    feature_inputs: tuple[str, ...] = ()
    feature_sources: tuple[str, ...] = ()
    error: str | None = None


class _Tracer(fx.Tracer):
    """Weighted and normalisation layers, and timm's untraceable modules, are leaves."""

    def __init__(self) -> None:
        from timm.layers import get_notrace_functions, get_notrace_modules

        super().__init__(
            autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f))
        )
        self._opaque = tuple(get_notrace_modules())
        self._norms = normalization_types()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, WEIGHTED_TYPES + self._norms + self._opaque):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def analyse(model: nn.Module) -> LayerGraph:
    """Trace ``model`` and read its weighted-layer graph; see :class:`LayerGraph`.

    A model that ``torch.fx`` cannot trace gives a graph with :attr:`LayerGraph.error` set, its
    weighted layers in module order and no inputs or norm gates.
    """
    modules = dict(model.named_modules())
    weighted = [path for path, m in modules.items() if isinstance(m, WEIGHTED_TYPES) and path]
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # any tracing failure: record it, fall back to module order
        message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        result = LayerGraph(order=weighted, error=message)
        result.inputs = {path: () for path in weighted}
        result.notes = {
            path: f"torch.fx could not trace the model ({message})" for path in weighted
        }
        return result

    result = LayerGraph()
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    opaque_of = _opaque_owners(modules, calls, weighted)
    for node in graph.nodes:
        if node.op == "call_module" and node.target in weighted and node.target not in result.order:
            result.order.append(str(node.target))
        elif node.op == "call_module" and str(node.target) in opaque_of:
            result.order.extend(p for p in opaque_of[str(node.target)] if p not in result.order)
    for path in result.order:
        if path in calls:
            norm = _consuming_norm(calls[path], modules, calls, units(modules[path]))
            if norm is not None:
                result.gate_norms[path] = norm
    sources = _ZeroSources(modules, set(weighted), result.gate_norms).run(graph)
    # Layers never called in forward are not weighted layers of the backbone (their parameters
    # are reported as uncovered by the caller).
    for path in result.order:
        layer = modules[path]
        if path not in calls:
            result.inputs[path] = ()
            result.notes[path] = "inside a module torch.fx cannot enter (timm notrace module)"
            continue
        reached, opaque = _reaching_layers(calls[path], weighted, opaque_of)
        width = input_width(layer)
        found, reason = sources.of_input(calls[path])
        if opaque:
            result.inputs[path] = ()
            result.notes[path] = "fed through a module torch.fx cannot enter"
        elif found is None:
            result.inputs[path] = ()
            if reason:
                result.notes[path] = reason
        elif any(units(modules[p]) != width for p in found):
            result.inputs[path] = ()
            result.notes[path] = (
                f"fed by {', '.join(sorted(found))} through an operation that does not map "
                f"their units one-to-one onto its {width} input channels"
            )
        else:
            result.inputs[path] = tuple(p for p in result.order if p in found)
    outputs = [node for node in graph.nodes if node.op == "output"]
    reached, _ = _reaching_layers(outputs, weighted, opaque_of)
    result.feature_inputs = tuple(p for p in result.order if p in reached)
    zeroed, _ = sources.of_input(outputs)
    result.feature_sources = tuple(p for p in result.order if p in (zeroed or ()))
    return result


def _opaque_owners(
    modules: dict[str, nn.Module], calls: dict[str, list[fx.Node]], weighted: list[str]
) -> dict[str, list[str]]:
    """Leaf modules of the trace that hold weighted layers, mapped to those layers."""
    owners: dict[str, list[str]] = {}
    for path in calls:
        if path in weighted:
            continue
        inner = [p for p in weighted if p.startswith(path + ".")]
        if inner:
            owners[path] = inner
    return owners


def _reaching_layers(
    nodes: list[fx.Node], weighted: list[str], opaque_of: dict[str, list[str]]
) -> tuple[set[str], bool]:
    """Weighted layers whose outputs reach the inputs of ``nodes``; and whether an opaque module
    lies on the way."""
    reached: set[str] = set()
    opaque = False
    seen: set[fx.Node] = set()
    stack = [arg for node in nodes for arg in node.all_input_nodes]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and node.target in weighted:
            reached.add(str(node.target))
            continue
        if node.op == "call_module" and str(node.target) in opaque_of:
            opaque = True
        stack.extend(node.all_input_nodes)
    return reached, opaque


def _consuming_norm(
    nodes: list[fx.Node],
    modules: dict[str, nn.Module],
    calls: dict[str, list[fx.Node]],
    width: int,
) -> str | None:
    """The per-channel normalisation (batch or instance norm) that alone consumes the layer's
    output (through shape-only operations), normalising ``width`` units and called once; ``None``
    if there is none.

    Only a norm whose statistics and affine transform are per channel can hold the gate: a layer
    or group norm mixes every channel into each output, so a unit gated after it would still
    move the others; such a layer is gated on its own output, before the norm.
    """
    if len(nodes) != 1:
        return None
    node = nodes[0]
    norms = per_channel_norm_types()
    while len(node.users) == 1:
        user = next(iter(node.users))
        if user.op == "call_module":
            module = modules[str(user.target)]
            if (
                isinstance(module, norms)
                and norm_width(module) == width
                and len(calls[str(user.target)]) == 1
            ):
                return str(user.target)
            return None
        is_layout = (user.op == "call_method" and user.target in _LAYOUT_METHODS) or (
            user.op == "call_function" and user.target in _LAYOUT_FUNCTIONS
        )
        if not is_layout or user.args[0] is not node:
            return None
        node = user
    return None


#: Functions and tensor methods that map a zero channel to a zero channel, element by element or
#: by moving and pooling values (their other arguments are sizes, dimensions or tensors of the
#: same sources).
_ZERO_PRESERVING_FUNCTIONS: frozenset[Any] = frozenset(
    {
        torch.permute,
        torch.transpose,
        torch.flatten,
        torch.reshape,
        torch.squeeze,
        torch.unsqueeze,
        torch.mean,
        torch.sum,
        torch.relu,
        torch.nn.functional.relu,
        torch.nn.functional.gelu,
        torch.nn.functional.silu,
        torch.nn.functional.hardswish,
        torch.nn.functional.dropout,
        torch.nn.functional.adaptive_avg_pool2d,
        torch.nn.functional.adaptive_max_pool2d,
        torch.nn.functional.avg_pool2d,
        torch.nn.functional.max_pool2d,
        operator.getitem,
    }
)
_ZERO_PRESERVING_METHODS = frozenset(
    {
        "permute",
        "transpose",
        "contiguous",
        "flatten",
        "reshape",
        "view",
        "squeeze",
        "unsqueeze",
        "mean",
        "sum",
        "relu",
        "relu_",
        "expand",
        "unbind",
        "chunk",
        "split",
        "amax",
    }
)
_SUMS = frozenset({operator.add, operator.iadd, torch.add, "add", "add_"})
_PRODUCTS = frozenset({operator.mul, operator.imul, torch.mul, "mul", "mul_"})
_QUOTIENTS = frozenset({operator.truediv, torch.div, "div", "div_"})

_Sources = frozenset[str] | None


class _ZeroSources:
    """Which weighted layers' unit gates zero each channel of each node of a trace.

    A node's sources ``S`` say: channel ``j`` of its value is exactly 0 whenever unit ``j`` of
    every layer in ``S`` is gated to 0. ``None`` means no such set is known: the value passes
    through an operation that can make a channel non-zero from other channels or from nothing
    (a layer or group norm, a softmax or attention, an activation with ``f(0) != 0``, the addition
    of a parameter such as a position embedding or class token, the network input). A mask method
    conditioning a weight on its input unit must treat such inputs as always used.
    """

    def __init__(
        self, modules: dict[str, nn.Module], weighted: set[str], gate_norms: dict[str, str]
    ) -> None:
        self.modules = modules
        self.weighted = weighted
        self.gated_after_norm = set(gate_norms)
        self.gating = {norm: layer for layer, norm in gate_norms.items()}
        self.values: dict[fx.Node, _Sources] = {}
        self.reasons: dict[fx.Node, str] = {}

    def run(self, graph: fx.Graph) -> _ZeroSources:
        for node in graph.nodes:
            self.values[node] = self._evaluate(node)
        return self

    def of_input(self, calls: list[fx.Node]) -> tuple[_Sources, str]:
        """The sources of a weighted layer's input over all its calls, or ``None`` and why."""
        found: set[str] = set()
        for call in calls:
            argument = call.args[0] if call.args else None
            if not isinstance(argument, fx.Node):
                return None, "its input is not traced"
            value = self.values.get(argument)
            if value is None:
                # No reason: the raw network input, which needs no note.
                return None, self.reasons.get(argument, "")
            found.update(value)
        return frozenset(found), ""

    def _dense(self, node: fx.Node, why: str) -> None:
        self.reasons.setdefault(node, why)

    def _inherit(self, node: fx.Node, argument: fx.Node) -> None:
        if argument in self.reasons:
            self.reasons.setdefault(node, self.reasons[argument])

    def _evaluate(self, node: fx.Node) -> _Sources:
        values = self.values
        if node.op == "placeholder":
            return None  # the network input: never gated (no note: it is the raw input)
        if node.op == "get_attr":
            self._dense(node, f"fed through parameter or buffer '{node.target}' added to it")
            return None
        inputs = node.all_input_nodes
        if node.op == "call_module":
            target = str(node.target)
            if target in self.weighted:
                return None if target in self.gated_after_norm else frozenset({target.strip()})
            module = self.modules[target]
            if target in self.gating:
                act = getattr(module, "act", None)
                if isinstance(act, nn.Module) and not _maps_zero_to_zero(act):
                    self._dense(node, f"fed through '{target}', whose activation maps 0 elsewhere")
                    return None
                return frozenset({self.gating[target]})
            if isinstance(module, normalization_types()):
                self._dense(
                    node,
                    f"fed through normalisation '{target}', which makes masked channels non-zero",
                )
                return None
            if not _maps_zero_to_zero(module) or len(inputs) != 1:
                self._dense(
                    node,
                    f"fed through '{target}' ({type(module).__name__}), which "
                    f"does not keep masked channels at 0",
                )
                return None
            self._inherit(node, inputs[0])
            return values[inputs[0]]
        if node.op not in ("call_function", "call_method"):
            return None
        function = node.target
        name = (
            function if isinstance(function, str) else getattr(function, "__name__", str(function))
        )
        constants = [a for a in node.args if isinstance(a, int | float) and not isinstance(a, bool)]
        if function in _SUMS:
            if any(c != 0 for c in constants):
                self._dense(node, f"fed through the addition of a constant ({name})")
                return None
            return self._union(node, inputs)
        if function in _PRODUCTS:
            # A product is 0 where any factor is: one factor with known sources suffices.
            known: list[frozenset[str]] = []
            for argument in inputs:
                value = values[argument]
                if value is not None:
                    known.append(value)
            if known:
                return min(known, key=len)
            return self._union(node, inputs)
        if function in _QUOTIENTS:
            first = node.args[0] if node.args else None
            if isinstance(first, fx.Node):
                self._inherit(node, first)
                return values[first]
            return None
        if (
            function is torch.cat
            or function in _ZERO_PRESERVING_FUNCTIONS
            or (node.op == "call_method" and function in _ZERO_PRESERVING_METHODS)
        ):
            return self._union(node, inputs)
        self._dense(node, f"fed through '{name}', which can make masked channels non-zero")
        return None

    def _union(self, node: fx.Node, inputs: list[fx.Node]) -> _Sources:
        found: set[str] = set()
        for argument in inputs:
            value = self.values[argument]
            if value is None:
                self._inherit(node, argument)
                return None
            found.update(value)
        return frozenset(found)


def _maps_zero_to_zero(module: nn.Module) -> bool:
    """Whether a parameter-free module maps an all-zero tensor to an all-zero tensor (activations
    with ``f(0) = 0``, pooling, dropout, identity, flattening)."""
    if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        return False
    training = module.training
    try:
        module.eval()
        with torch.no_grad():
            value = module(torch.zeros(1, 4, 4, 4))
    except Exception:  # a module that cannot run on a plain 4-d tensor: unknown
        return False
    finally:
        module.train(training)
    return isinstance(value, torch.Tensor) and bool((value == 0).all())
