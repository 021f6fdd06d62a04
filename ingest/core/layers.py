"""Generic layer cuts: prefix (image -> layer) and segment (layer below -> layer) functions.

The model is traced once with torch.fx, treating every listed layer as one opaque node (or, for a
listed layer that contains another listed layer, recording the node its forward returns). Prefixes
and segments are sub-graphs of that trace, so no architecture is hard-coded. They share the model's
parameters, support autograd and move with `.to(device)`.
"""

from __future__ import annotations

import difflib
import inspect
import operator
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import contextmanager

import torch
import torch.fx as fx
from torch import Tensor, nn


class LayerError(ValueError):
    """A layer list that cannot be cut: unknown name, invalid cut, untraceable model."""


USE_SEP = "@"  # "head.act@2": the second call of a module that forward runs more than once


def split_use(name: str) -> tuple[str, int | None]:
    """("head.act", 2) for "head.act@2"; (name, None) for a plain module name."""
    base, sep, use = name.rpartition(USE_SEP)
    if not sep:
        return name, None
    if not use.isdigit() or int(use) < 1:
        raise LayerError(
            f"{name!r}: after {USE_SEP!r} comes the use of the module, counting from 1 "
            f"(e.g. {base}{USE_SEP}2)"
        )
    return base, int(use)


def _resnet_layers(blocks: Sequence[int]) -> list[str]:
    """fc, the blocks of layer4 and layer3 from the top, then the last block of layer2.

    Deeper ResNets get ResNet-50's block counts: their lists stay the paper's length, and the
    segment from layer3.5 to layer4.0 carries the remaining layer3 blocks.
    """
    names = ["fc"]
    for stage in (4, 3):
        names += [f"layer{stage}.{i}" for i in reversed(range(blocks[stage - 1]))]
    return [*names, f"layer2.{blocks[1] - 1}"]


_RESNET_BLOCKS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    **dict.fromkeys(
        [
            "resnet50",
            "resnet101",
            "resnet152",
            "resnext50_32x4d",
            "resnext101_32x8d",
            "resnext101_64x4d",
            "wide_resnet50_2",
            "wide_resnet101_2",
        ],
        (3, 4, 6, 3),
    ),
}

# Layers are listed from the output down. ResNet-50, GoogLeNet and AlexNet follow the paper;
# resnet101/152 (and their ResNeXt/wide twins) reuse ResNet-50's list, as the paper's code does.
DEFAULT_LAYERS: dict[str, list[str]] = {
    **{name: _resnet_layers(blocks) for name, blocks in _RESNET_BLOCKS.items()},
    "googlenet": [
        "fc",
        "inception5b",
        "inception5a",
        "inception4e",
        "inception4d",
        "inception4c",
        "inception4b",
        "inception4a",
        "inception3b",
        "inception3a",
        "maxpool2",
    ],
    "alexnet": [
        "classifier.6",
        "classifier.5",
        "classifier.2",
        "features.12",
        "features.9",
        "features.7",
        "features.5",
        "features.2",
    ],
    # Like AlexNet's list: post-ReLU / pooled outputs, the pool replacing the ReLU just under it.
    "vgg16": [
        "classifier.6",
        "classifier.4",
        "classifier.1",
        "features.30",
        "features.27",
        "features.25",
        "features.23",
        "features.20",
        "features.18",
        "features.16",
    ],
    # Modern CNN families: whole blocks (their residual sums stay inside a segment), from the
    # classifier down through the top stages, then the last block of the stage below (as ResNet).
    "convnext_tiny": [
        "classifier.2",
        *[f"features.7.{i}" for i in reversed(range(3))],
        *[f"features.5.{i}" for i in reversed(range(9))],
        "features.3.2",
    ],
    "efficientnet_b0": [
        "classifier.1",
        "features.8",
        "features.7.0",
        *[f"features.6.{i}" for i in reversed(range(4))],
        *[f"features.5.{i}" for i in reversed(range(3))],
        "features.4.2",
    ],
    "mobilenet_v3_large": [
        "classifier.3",
        "classifier.1",
        *[f"features.{i}" for i in range(16, 8, -1)],
    ],
    "regnet_y_400mf": [
        "fc",
        *[f"trunk_output.block4.block4-{i}" for i in reversed(range(6))],
        *[f"trunk_output.block3.block3-{i}" for i in reversed(range(6))],
        "trunk_output.block2.block2-2",
    ],
    # Transformers: whole encoder blocks (their two residual additions stay inside a segment); a
    # neuron is one dimension of the residual stream at a block's output, averaged over all tokens.
    **{
        vit: ["heads.head", *[f"encoder.layers.encoder_layer_{i}" for i in range(11, 3, -1)]]
        for vit in ("vit_b_16", "vit_b_32")
    },
    # Swin keeps its maps channels last ([B, H, W, C]); the cuts turn them channels first.
    "swin_t": [
        "head",
        "features.7.1",
        "features.7.0",
        *[f"features.5.{i}" for i in reversed(range(6))],
        "features.3.1",
    ],
    # Inside a dense block every layer reads the outputs of all the layers before it, so the only
    # valid cuts are between blocks: a block's output (the concatenation) and the transitions.
    "densenet121": [
        "classifier",
        "features.norm5",
        "features.denseblock4",
        "features.transition3",
        "features.denseblock3",
        "features.transition2",
        "features.denseblock2",
        "features.transition1",
    ],
}


def default_layers(arch: str) -> list[str]:
    """The shipped layer list (top first) for an architecture name."""
    if arch == "planted_cnn":
        from ingest.planted.model import PLANTED_LAYERS

        return list(PLANTED_LAYERS)
    if arch == "planted_resnet":
        # Whole stages: every skip connection stays inside one listed layer.
        from ingest.planted.resnet import RESNET_LAYERS

        return list(RESNET_LAYERS)
    if arch == "planted_vit":
        from ingest.planted.vit import VIT_LAYERS

        return list(VIT_LAYERS)
    if arch == "planted_toys_cnn":
        # Mixed widths (block3 is 32 wide); a plain sequential net, so every cut is clean.
        from ingest.planted.toys_model import TOYS_LAYERS

        return list(TOYS_LAYERS)
    if arch in DEFAULT_LAYERS:
        return list(DEFAULT_LAYERS[arch])
    known = ", ".join(
        sorted([*DEFAULT_LAYERS, "planted_cnn", "planted_resnet", "planted_vit", "planted_toys_cnn"])
    )
    raise LayerError(
        f"no default layer list for {arch!r} (defaults exist for: {known}). "
        f"Name the layers yourself, top first; `neurflow layers MODEL` lists the candidates."
    )


def available_layers(module: nn.Module) -> list[tuple[str, str]]:
    """(qualified name, module type) of every submodule that has a forward of its own."""
    return [
        (name, type(m).__name__)
        for name, m in module.named_modules()
        if name and not isinstance(m, nn.ModuleList | nn.ModuleDict)
    ]


def _reject_torchscript(module: nn.Module) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        raise LayerError(
            "a TorchScript model cannot be cut into layers (torch.fx cannot trace it). Load the "
            "model from a state_dict plus its architecture, or from a whole saved module "
            "(torch.save(model)), instead."
        )


@contextmanager
def _forward_hooks(module: nn.Module, hook_for):
    """Register `hook_for(name)` on every named submodule; remove every hook on exit."""
    handles = []
    try:
        for name, m in module.named_modules():
            if name:
                handles.append(m.register_forward_hook(hook_for(name)))
        yield
    finally:
        for h in handles:
            h.remove()


def describe_layers(module: nn.Module, input_size: int, device: str | torch.device = "cpu") -> list[dict]:
    """Every submodule that runs on a dummy image, in execution order, with its output shape.

    Each entry: name, type, shape (output shape without the batch dimension, or None when the
    output is not a tensor), channels (units of a [B, C] or channels of a [B, C, H, W] output, else
    None) and calls (how often forward runs it; a layer to cut must run exactly once).
    """
    _reject_torchscript(module)
    seen: dict[str, dict] = {}
    types = dict(available_layers(module))

    def hook_for(name: str):
        def hook(mod, _inputs, out):
            if name in seen:
                seen[name]["calls"] += 1
                return
            shape = list(out.shape[1:]) if isinstance(out, Tensor) else None
            channels = shape[0] if shape is not None and len(shape) in (1, 3) else None
            seen[name] = {
                "name": name,
                "type": types.get(name, type(mod).__name__),
                "shape": shape,
                "channels": channels,
                "calls": 1,
            }

        return hook

    was_training = module.training
    module.eval()
    try:
        with _forward_hooks(module, hook_for), torch.no_grad():
            module(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        module.train(was_training)
    return list(seen.values())


# ----------------------------------------------------------------------------- tracing


class _CutTracer(fx.Tracer):
    """Keeps each listed layer as one node, and records every call of a listed layer."""

    def __init__(self, leaves: set[str], watched: set[str]):
        super().__init__()
        self.leaves = leaves
        self.watched = watched
        self.calls: dict[str, list[tuple[object, object]]] = {}
        self.sites: dict[str, list[str]] = {}  # where forward calls each watched module

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaves:
            return True
        prefix = module_qualified_name + "."
        if any(w.startswith(prefix) for w in self.watched):
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        name = self.path_of_module(m)
        if name in self.watched:
            first = args[0] if args else next(iter(kwargs.values()), None)
            self.calls.setdefault(name, []).append((out, first))
            self.sites.setdefault(name, []).append(_call_site())
        return out


def _concrete_args(module: nn.Module) -> dict[str, object]:
    """Bake in every forward argument after the image (they must have defaults)."""
    params = list(inspect.signature(module.forward).parameters.values())
    params = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    extra = {}
    for p in params[1:]:
        if p.default is inspect.Parameter.empty:
            raise LayerError(
                f"{type(module).__name__}.forward takes more than one input ({p.name!r} has no "
                f"default); only models taking a single image batch can be cut"
            )
        extra[p.name] = p.default
    return extra


_INPLACE_FUNCTIONS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.setitem,
}
# Ops whose result shares memory with their first argument: writing into it writes the argument.
_VIEW_OPS = {
    "view",
    "view_as",
    "reshape",
    "flatten",
    "unflatten",
    "transpose",
    "permute",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "narrow",
    "select",
    "t",
    "contiguous",
    "detach",
    "getitem",
    "__getitem__",
}


def _is_inplace(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether `node` overwrites its first argument (ReLU(inplace=True), x.add_(...), ...)."""
    if node.op == "call_module":
        return getattr(modules.get(node.target), "inplace", False) is True
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op != "call_function":
        return False
    if node.target in _INPLACE_FUNCTIONS or node.kwargs.get("inplace") is True:
        return True
    fname = getattr(node.target, "__name__", "")
    if fname.endswith("_") and not fname.endswith("__"):
        return True
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return False
    return bound.arguments.get("inplace") is True


def _call_site() -> str:
    """Where the model's code calls the module being traced: "model.py:42 `x = self.act(x)`" (the
    innermost frame outside torch and this file)."""
    import traceback

    here = __file__.rsplit(".", 1)[0]
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename.replace("\\", "/")
        if "/torch/" in path or path.rsplit(".", 1)[0] == here:
            continue
        code = f" `{frame.line.strip()}`" if frame.line else ""
        return f"{path.rsplit('/', 1)[-1]}:{frame.lineno}{code}"
    return "?"


def _label(node: fx.Node) -> str:
    """Readable name of a graph node for error messages."""
    if node.op == "placeholder":
        return "input"
    if node.op in ("call_module", "get_attr"):
        return str(node.target)
    fn = node.target if node.op == "call_method" else getattr(node.target, "__name__", node.target)
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else None
    return f"{owner} ({fn})" if owner else str(fn)


def _ancestors(
    roots: Iterable[fx.Node], stop: fx.Node | None, opaque: set[fx.Node] = frozenset()
) -> set[fx.Node]:
    """All nodes the roots depend on, not looking past `stop` or the `opaque` nodes (included)."""
    seen: set[fx.Node] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node is not stop and node not in opaque:
            stack.extend(node.all_input_nodes)
    return seen


def _is_view(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _VIEW_OPS
    return node.op == "call_function" and getattr(node.target, "__name__", "") in _VIEW_OPS


def _is_shape_read(node: fx.Node) -> bool:
    """`x.size()`, `x.size(0)`, `x.shape`, `x.dim()`: reads a tensor's shape, not its values."""
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return node.op == "call_function" and node.target is getattr and node.args[1:2] == ("shape",)


def _batch_shape(tensor: Tensor, rest: tuple[int, ...]) -> torch.Size:
    """The shape of a tensor outside a segment: the batch of the segment's input, the rest as traced."""
    return torch.Size((tensor.shape[0], *rest))


def _needed(
    roots: Iterable[fx.Node],
    stop: fx.Node | None,
    modules: dict[str, nn.Module],
    opaque: set[fx.Node] = frozenset(),
) -> set[fx.Node]:
    """Ancestors of `roots` (not past `stop`, nor past the `opaque` nodes) plus the in-place ops that
    write into them.

    fx records `y.add_(1)` as a node nobody uses, so plain ancestry would drop the write.
    """
    needed = _ancestors(roots, stop, opaque)
    while True:
        writes = []
        for node in needed:
            pending, seen = [node], set()
            while pending:
                alias = pending.pop()
                if alias in seen:
                    continue
                seen.add(alias)
                for user in alias.users:
                    inplace = _is_inplace(user, modules)
                    if user.args and user.args[0] is alias and (inplace or _is_view(user)):
                        pending.append(user)
                        if inplace and user not in needed:
                            writes.append(user)
        if not writes:
            return needed
        needed |= _ancestors(writes, stop, opaque)


class LayerCuts:
    """Prefix and segment functions for an ordered layer list (top first).

    Tracing uses the model in eval mode (the model is switched to eval): the cuts describe
    inference, and branches such as GoogLeNet's auxiliary heads disappear.
    """

    def __init__(self, module: nn.Module, layers: Sequence[str], input_size: int):
        _reject_torchscript(module)
        self.module = module
        self.layers: list[str] = list(layers)
        self.input_size = int(input_size)
        if not self.layers:
            raise LayerError("the layer list is empty; name at least one layer")
        dupes = sorted({n for n in self.layers if self.layers.count(n) > 1})
        if dupes:
            raise LayerError(f"layers listed more than once: {', '.join(dupes)}")
        self._check_names()
        module.eval()
        self._trace()
        self._input = next(n for n in self._graph.nodes if n.op == "placeholder")
        for upper, lower in zip(self.layers, self.layers[1:], strict=False):
            self._check_cut(upper, lower)
        self._cache: dict[object, fx.GraphModule] = {}
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._layouts: dict[str, str] = {}

    # ------------------------------------------------------------------ set-up and validation

    def _check_names(self) -> None:
        modules = dict(self.module.named_modules())
        for listed in self.layers:
            name, _use = split_use(listed)
            if name in modules and name:
                continue
            candidates = [n for n, _ in available_layers(self.module)]
            close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise LayerError(
                f"unknown layer {name!r} in {type(self.module).__name__}.{hint} "
                f"`neurflow layers MODEL` lists the {len(candidates)} candidate layers."
            )

    def _trace(self) -> None:
        listed = {split_use(n)[0] for n in self.layers}
        nested = {n for n in listed if any(o.startswith(n + ".") for o in listed)}
        tracer = _CutTracer(leaves=listed - nested, watched=listed)
        try:
            self._graph = tracer.trace(self.module, concrete_args=_concrete_args(self.module))
        except LayerError:
            raise
        except Exception as e:
            raise LayerError(
                f"torch.fx could not trace {type(self.module).__name__}: {type(e).__name__}: {e}. "
                f"Models whose forward branches on tensor values cannot be cut automatically; "
                f"if the branching sits inside one block, list that block itself as a layer."
            ) from e
        self._modules = dict(self.module.named_modules())
        self._out: dict[str, fx.Node] = {}
        self._in: dict[str, fx.Node | None] = {}
        self._shape_reads = {n for n in self._graph.nodes if _is_shape_read(n)}
        self._static: dict[fx.Node, tuple[int, ...]] | None = None
        for name in self.layers:
            base, use = split_use(name)
            calls = tracer.calls.get(base, [])
            if not calls:
                raise LayerError(
                    f"layer {base!r} never runs in forward (in eval mode); a listed layer must run"
                )
            if use is None and len(calls) > 1:
                sites = "; ".join(
                    f"{base}{USE_SEP}{i} at {site}" for i, site in enumerate(tracer.sites[base], start=1)
                )
                raise LayerError(
                    f"layer {base!r} runs {len(calls)} times in one forward pass (one module object "
                    f"used in {len(calls)} places). Name the use you mean: {sites}"
                )
            if use is not None and use > len(calls):
                raise LayerError(
                    f"layer {name!r}: {base!r} runs {len(calls)} time{'s' if len(calls) != 1 else ''} "
                    f"in one forward pass; uses are {base}{USE_SEP}1 to {base}{USE_SEP}{len(calls)}"
                )
            out, first = calls[(use or 1) - 1]
            if not isinstance(out, fx.Proxy):
                raise LayerError(
                    f"layer {name!r} returns {type(out).__name__}, not a single tensor; "
                    f"list a submodule that returns one"
                )
            self._out[name] = out.node
            self._in[name] = first.node if isinstance(first, fx.Proxy) else None

    def _check_cut(self, upper: str, lower: str) -> None:
        top, cut = self._out[upper], self._out[lower]
        # Reading a tensor's shape (x.size(0), x.shape) is not a data path: a segment takes the batch
        # size from its own input and the other dimensions from the trace.
        if self._input not in _needed([top], cut, self._modules, self._shape_reads):
            return
        if top in _ancestors([cut], stop=None):
            raise LayerError(
                f"layers must be listed from the output down, but {upper} runs before {lower}; swap them"
            )
        path = self._path_avoiding(top, cut)
        if path is None:
            raise LayerError(
                f"invalid cut: {upper} depends on the input other than through {lower}, by an "
                f"in-place write into a tensor it uses; choose other layers"
            )
        trunk = _ancestors([cut], stop=None)
        split = max(i for i, n in enumerate(path) if n in trunk)
        shown = path[split:]
        if len(shown) > 8:
            shown = [*shown[:3], None, *shown[-4:]]
        start = [path[0], None] if split > 1 else path[:split]
        text = " -> ".join("..." if n is None else _label(n) for n in [*start, *shown])
        concat = any(n.op == "call_function" and n.target in (torch.cat, torch.concat) for n in path)
        advice = (
            "a concatenation feeds it earlier outputs, as inside a DenseNet dense block: cut between "
            "blocks (a dense block's output or a transition)"
            if concat
            else "choose layers without skip connections around them (e.g. whole residual blocks "
            "rather than convolutions inside them)"
        )
        raise LayerError(
            f"invalid cut: {upper} is reachable from the input without passing through {lower}: "
            f"{text} (= {upper}). Every path from the image to a layer must go through the layer "
            f"listed under it; {advice}."
        )

    def _path_avoiding(self, target: fx.Node, avoid: fx.Node) -> list[fx.Node] | None:
        """Shortest input -> target path not passing through `avoid` (nor through a shape read)."""
        parent: dict[fx.Node, fx.Node | None] = {target: None}
        queue = deque([target])
        while queue:
            node = queue.popleft()
            if node is self._input:
                break
            if node in self._shape_reads:
                continue
            for src in node.all_input_nodes:
                if src is not avoid and src not in parent:
                    parent[src] = node
                    queue.append(src)
        if self._input not in parent:
            return None
        path, node = [], self._input
        while node is not None:
            path.append(node)
            node = parent[node]
        return path

    # ------------------------------------------------------------------ sub-graphs

    def _extract(self, outputs: dict[str, fx.Node], cut: fx.Node | None, *, as_dict: bool) -> fx.GraphModule:
        """A GraphModule computing `outputs` from the image (cut=None) or from `cut`'s value.

        A tensor that an in-place op of the sub-graph overwrites is cloned where it must stay
        intact: the segment's input (a caller's leaf tensor must stay untouched and
        differentiable) and every returned value.
        """
        opaque = self._shape_reads if cut is not None else frozenset()
        needed = _needed(outputs.values(), cut, self._modules, opaque)

        def outside(read: fx.Node) -> bool:
            """A shape read of a tensor the segment does not compute (above the cut, e.g. the image)."""
            source = read.args[0]
            return cut is not None and source is not cut and source not in needed

        def overwritten(node: fx.Node) -> bool:
            return any(
                u in needed and u.args and u.args[0] is node and _is_inplace(u, self._modules)
                for u in node.users
            )

        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        kept: dict[fx.Node, fx.Node] = {}
        if cut is not None:
            x = graph.placeholder("x")
            env[cut] = graph.call_method("clone", (x,)) if overwritten(cut) else x
        returned = set(outputs.values())
        for node in self._graph.nodes:
            if node not in needed or node is cut:
                continue
            if node in self._shape_reads and outside(node):
                env[node] = self._shape_from(graph, node, env[cut])
                continue
            env[node] = graph.node_copy(node, lambda n: env[n])
            if node in returned and overwritten(node):
                kept[node] = graph.call_method("clone", (env[node],))
        values = {key: kept.get(node, env[node]) for key, node in outputs.items()}
        graph.output(values if as_dict else next(iter(values.values())))
        graph.lint()
        return fx.GraphModule(self.module, graph, class_name="LayerCut")

    def _static_shapes(self) -> dict[fx.Node, tuple[int, ...]]:
        """The shape without the batch of every traced tensor, from one probe image (once)."""
        if self._static is None:
            from torch.fx.passes.shape_prop import ShapeProp

            with torch.no_grad():
                ShapeProp(fx.GraphModule(self.module, self._graph)).propagate(self._probe())
            self._static = {
                n: tuple(n.meta["tensor_meta"].shape[1:])
                for n in self._graph.nodes
                if hasattr(n.meta.get("tensor_meta"), "shape")
            }
        return self._static

    def _probe(self) -> Tensor:
        """One black image of the input size, on the model's device and in its dtype."""
        param = next(self.module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        return torch.zeros(1, 3, self.input_size, self.input_size, device=device, dtype=dtype)

    def _shape_from(self, graph: fx.Graph, read: fx.Node, segment_input: fx.Node) -> fx.Node:
        """`read` (a shape read of a tensor outside the segment) rebuilt inside it: dimension 0 is the
        batch, the size of the segment's input; the others are as traced (the input size is fixed)."""
        source = read.args[0]
        rest = self._static_shapes().get(source)
        if rest is None:
            raise LayerError(f"cannot tell the shape of {_label(source)}, whose shape {_label(read)} reads")
        shape = graph.call_function(_batch_shape, (segment_input, rest))
        if read.op == "call_function" or (read.target == "size" and len(read.args) == 1 and not read.kwargs):
            return shape  # x.shape, x.size()
        if read.target == "dim":
            return graph.call_function(len, (shape,))
        dim = read.args[1] if len(read.args) > 1 else read.kwargs.get("dim")
        return graph.call_function(operator.getitem, (shape, dim))

    def _subgraph(
        self, key: object, outputs: dict[str, fx.Node], cut: fx.Node | None, *, as_dict: bool
    ) -> fx.GraphModule:
        if key not in self._cache:
            self._cache[key] = self._extract(outputs, cut, as_dict=as_dict)
        return self._cache[key]

    def _listed(self, name: str) -> str:
        if name not in self._out:
            raise LayerError(f"{name!r} is not one of the listed layers: {', '.join(self.layers)}")
        return name

    # ------------------------------------------------------------------ public API

    def below(self, name: str) -> str | None:
        """The next listed layer under `name` (None for the lowest)."""
        i = self.layers.index(self._listed(name))
        return self.layers[i + 1] if i + 1 < len(self.layers) else None

    def prefix(self, name: str) -> nn.Module:
        """image batch -> output of `name` (channels first, see `channels_last`)."""
        node = self._out[self._listed(name)]
        inner = self._subgraph(("prefix", name), {name: node}, None, as_dict=False)
        return _ChannelsFirst(inner, None, self._layout(name))

    def segment(self, upper: str) -> nn.Module:
        """output of below(upper) -> output of `upper`, both channels first."""
        lower = self.below(upper)
        if lower is None:
            raise LayerError(f"{upper!r} is the lowest listed layer: it has a prefix, no segment")
        top, cut = self._out[upper], self._out[lower]
        inner = self._subgraph(("segment", upper), {upper: top}, cut, as_dict=False)
        return _ChannelsFirst(inner, self._layout(lower), self._layout(upper))

    def _layout(self, name: str) -> str:
        """How a listed layer's output (or "<lowest>:input") holds its neurons: "tokens" [B, T, D]
        (transformer blocks), "nhwc" [B, H, W, C] (Swin stages), else channels first."""
        base = split_use(name.split(":", 1)[0])[0]
        if base not in self._layouts:
            self._layouts[base] = "nhwc" if channels_last(self._modules[base]) else "cf"
        return self._layouts[base]

    def activations(
        self,
        x: Tensor,
        names: Iterable[str] | None = None,
        *,
        means: bool = True,
        lowest_input: bool = False,
    ) -> dict[str, Tensor]:
        """The listed layers' outputs from one forward pass.

        Outputs are channels first: [B, C, H, W] maps, [B, D, T] tokens (a transformer's [B, T, D]
        transposed: every residual dimension is a neuron over T positions), [B, C] units; a Swin
        stage's [B, H, W, C] is permuted to [B, C, H, W]. With means=True a neuron's positions are
        averaged (the paper's spatial mean; for tokens, over all T tokens, the class token included:
        it is the position the head reads). With
        lowest_input=True the tensor entering the lowest listed layer is also returned, under
        "<lowest>:input": the representative space of the lowest layer's semantic groups.
        """
        wanted = tuple(self._listed(n) for n in (self.layers if names is None else names))
        lowest = self.layers[-1]
        outputs = {n: self._out[n] for n in wanted}
        if lowest_input:
            entering = self._in[lowest]
            if entering is None:
                raise LayerError(f"the input of layer {lowest!r} is not a single tensor")
            outputs[f"{lowest}:input"] = entering
        key = ("activations", wanted, lowest_input)
        raw = self._subgraph(key, outputs, None, as_dict=True)(x)
        result = {k: to_channels_first(v, self._layout(k)) for k, v in raw.items()}
        return {k: _spatial_mean(k, v) for k, v in result.items()} if means else result

    def representative_keys(self) -> dict[str, str]:
        """Each listed layer's representative space (Eq. 3) as named in `activations`' result: the
        layer below, or the lowest layer's input for the lowest layer."""
        lowest = self.layers[-1]
        return {name: (self.below(name) or f"{lowest}:input") for name in self.layers}

    def shape(self, name: str) -> tuple[int, ...]:
        """Output shape of a listed layer for one image of `input_size`, without the batch."""
        self._listed(name)
        if self._shapes is None:
            with torch.no_grad():
                acts = self.activations(self._probe(), means=False)
            self._shapes = {k: tuple(v.shape[1:]) for k, v in acts.items()}
        return self._shapes[name]

    def width(self, name: str) -> int:
        """Number of neurons of the layer output: channels (conv), units (linear) or the residual
        dimension (transformer tokens)."""
        shape = self.shape(name)
        if len(shape) not in (1, 2, 3):
            raise LayerError(
                f"layer {name!r} outputs shape {list(shape)}; expected [C] units, [D, T] tokens or "
                "[C, H, W] maps"
            )
        return shape[0]


def channels_last(module: nn.Module) -> bool:
    """Whether a 4-d output of `module` is [B, H, W, C]: Swin blocks and patch merging (torchvision
    and timm) keep their feature maps channels last. A container is judged by its last module."""
    while isinstance(module, nn.Sequential | nn.ModuleList) and len(module):
        module = module[-1]
    name = type(module).__name__
    return "Swin" in name or "PatchMerging" in name


def to_channels_first(value: Tensor, layout: str = "cf") -> Tensor:
    """A layer output with its neurons on dim 1: tokens [B, T, D] -> [B, D, T], and [B, H, W, C] ->
    [B, C, H, W] when `layout` is "nhwc"."""
    if value.dim() == 3:
        return value.transpose(1, 2)
    if value.dim() == 4 and layout == "nhwc":
        return value.permute(0, 3, 1, 2)
    return value


def from_channels_first(value: Tensor, layout: str = "cf") -> Tensor:
    """The inverse of `to_channels_first`: what the model's own code expects."""
    if value.dim() == 3:
        return value.transpose(1, 2)
    if value.dim() == 4 and layout == "nhwc":
        return value.permute(0, 2, 3, 1)
    return value


class _ChannelsFirst(nn.Module):
    """A cut seen with its neurons on dim 1 at both ends, whatever layout the model uses inside."""

    def __init__(self, inner: nn.Module, lower: str | None, upper: str):
        super().__init__()
        self.inner, self.lower, self.upper = inner, lower, upper

    def forward(self, x: Tensor) -> Tensor:
        if self.lower is not None:
            x = from_channels_first(x, self.lower)
        return to_channels_first(self.inner(x), self.upper)


def _spatial_mean(name: str, value: Tensor) -> Tensor:
    if value.dim() in (3, 4):
        return value.flatten(2).mean(2)
    if value.dim() == 2:
        return value
    raise LayerError(
        f"layer {name!r} outputs shape {list(value.shape)}; neuron activations need "
        f"[B, C, H, W] feature maps, [B, T, D] tokens or [B, C] units"
    )
