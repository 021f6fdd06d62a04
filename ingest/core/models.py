"""Load a classifier from an architecture name, an entry point or a saved file, never downloading.

Accepted weight files: a state_dict (bare, or nested under "state_dict" / "model" /
"model_state_dict", with "module." or "_orig_mod." prefixes stripped), a whole saved module
(`torch.save(model)`; unpickling runs code, so only load files you trust) or a TorchScript file.
A JSON sidecar `<weights without suffix>.json` may give `classes`, `input_size`, `mean`, `std`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FILE_ARCHS = ("auto", "saved-module", "torchscript")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")
_KEY_PREFIXES = ("module.", "_orig_mod.")
_AUX_HEADS = {"googlenet": "aux1.", "inception_v3": "AuxLogits."}
# The planted benchmark's models (ingest/planted/): built here, shipped weights `<name>.pt`.
PLANTED_MODELS = ("planted_cnn", "planted_resnet", "planted_vit", "planted_toys_cnn")


class ModelError(ValueError):
    """A model that cannot be loaded as an image classifier; the message says what to change."""


@dataclass
class LoadedModel:
    module: nn.Module
    arch: str
    model_id: str
    weights_sha256: str | None
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    class_names: list[str] | None
    default_layers: list[str] | None
    # How to load it again: the `model` argument and the weights file (absolute path, None when
    # the model was built from its shipped or random weights).
    spec: str = ""
    weights_path: str | None = None
    # Set when preprocessing fell back to defaults the user did not choose (no sidecar mean/std):
    # what was assumed and which file would say otherwise. Commands print it.
    preprocessing_note: str | None = None


def torchvision_archs() -> list[str]:
    """Classification architectures torchvision can build."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_model(
    model: str,
    weights: str | Path | None = None,
    *,
    num_classes: int | None = None,
    input_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    sidecar: str | Path | None = None,
) -> LoadedModel:
    """Build or load `model`, check it is a classifier, and put it in eval mode on `device`.

    `model` is a torchvision architecture name, a planted model (PLANTED_MODELS), a
    "package.module:factory" entry point, or (when `weights` holds a whole module or TorchScript)
    "auto". Without weights the model is randomly initialised with `seed` (the planted models load
    their shipped weights instead).
    """
    dev = _device(device)
    builder = _builder(model)
    path = Path(weights) if weights is not None else None
    if path is None and model in PLANTED_MODELS:
        path = _planted_weights_path(model)
    if path is None and builder is None:
        raise ModelError(f"model {model!r} means 'take the model from the weights file': pass one")

    sidecar_path = Path(sidecar) if sidecar is not None else (path.with_suffix(".json") if path else None)
    if sidecar is not None and not sidecar_path.is_file():
        raise ModelError(f"sidecar {sidecar_path} does not exist")
    sidecar = _read_sidecar(sidecar_path) if sidecar_path is not None else {}
    kind, payload = _read_weights(path) if path is not None else ("none", None)
    if kind in ("torchscript", "module"):
        net = payload
        arch = "torchscript" if kind == "torchscript" else "saved-module"
    else:
        if builder is None:
            raise ModelError(
                f"{path} holds a state_dict, which needs an architecture: pass a torchvision "
                f"name (e.g. resnet50), planted_cnn or package.module:factory instead of {model!r}"
            )
        arch = model
        net = _build_with_weights(model, builder, payload, path, num_classes, seed)

    declared = _declared_preprocessing(net, model)
    sidecar = {**declared, **sidecar}  # a sidecar file wins over what the factory declares
    size = int(input_size or sidecar.get("input_size") or _default_input_size(model))
    net = net.to(dev).eval()
    out_classes = _check_classifier(net, size, dev, arch)
    if num_classes is not None and num_classes != out_classes:
        raise ModelError(f"{arch} outputs {out_classes} classes but num_classes={num_classes} was asked for")
    names = _class_names(model, sidecar, out_classes, path)
    sha = _sha256(path) if path is not None else None
    if sha is None and ":" in model:
        # A factory may load weights of its own (from a package): name the model by its parameters.
        sha = _state_sha256(net)
        log.info("%s: no weights file; the model is as its factory built it (id from its parameters)", model)
    elif sha is None:
        log.warning("%s: no weights given, using a random initialisation (seed %d)", model, seed)
    return LoadedModel(
        module=net,
        arch=arch,
        model_id=f"{arch}-{sha[:12]}" if sha else f"{arch}-random{seed}",
        weights_sha256=sha,
        input_size=size,
        mean=_triple(sidecar.get("mean"), _default_norm(model, "MEAN", IMAGENET_MEAN), "mean"),
        std=_triple(sidecar.get("std"), _default_norm(model, "STD", IMAGENET_STD), "std"),
        num_classes=out_classes,
        class_names=names,
        default_layers=sidecar.get("layers") or _layers_for(model, net),
        spec=model,
        weights_path=str(Path(weights).resolve()) if weights is not None else None,
        preprocessing_note=_preprocessing_note(model, sidecar_path, sidecar, size),
    )


def _preprocessing_note(model: str, side: Path | None, sidecar: dict, size: int) -> str | None:
    """Say when a model's normalisation is ImageNet's by default rather than by a sidecar: a model
    trained with other statistics would quietly see shifted inputs."""
    if model in PLANTED_MODELS or ("mean" in sidecar and "std" in sidecar):
        return None
    side = side if side is not None else Path("<weights>.json")
    missing = "has no mean/std" if side.is_file() else "does not exist"
    return (
        f"preprocessing: ImageNet mean {IMAGENET_MEAN} and std {IMAGENET_STD} at {size} px, because the "
        f"sidecar {side} {missing}; if the model was trained otherwise, write its mean, std, input_size "
        "(and classes) there"
    )


# ----------------------------------------------------------------------------- builders

Builder = Callable[[int | None], nn.Module]


def _builder(model: str) -> Builder | None:
    """A function num_classes (None = the model's default) -> fresh module, or None for files."""
    if model in FILE_ARCHS:
        return None
    if model == "planted_cnn":

        def planted(n: int | None) -> nn.Module:
            from ingest.planted.model import CLASS_NAMES, build_planted_cnn

            return build_planted_cnn(n or len(CLASS_NAMES))

        return planted
    if model == "planted_resnet":

        def planted_resnet(n: int | None) -> nn.Module:
            from ingest.planted.resnet import CLASS_NAMES, build_planted_resnet

            return build_planted_resnet(n or len(CLASS_NAMES))

        return planted_resnet
    if model == "planted_vit":

        def planted_vit(n: int | None) -> nn.Module:
            from ingest.planted.vit import CLASS_NAMES, build_planted_vit

            return build_planted_vit(n or len(CLASS_NAMES))

        return planted_vit
    if model == "planted_toys_cnn":

        def planted_toys_cnn(n: int | None) -> nn.Module:
            from ingest.planted.toys_model import CLASS_NAMES, build_planted_toys_cnn

            return build_planted_toys_cnn(n or len(CLASS_NAMES))

        return planted_toys_cnn
    if ":" in model:
        return _entry_point(model)
    archs = torchvision_archs()
    if model not in archs:
        close = difflib.get_close_matches(model, [*archs, *PLANTED_MODELS], n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown architecture {model!r}.{hint} Use a torchvision classification model name, "
            f"planted_cnn, planted_resnet, planted_vit, planted_toys_cnn, or package.module:factory for "
            "your own model."
        )

    def torchvision_model(n: int | None, aux: bool = False) -> nn.Module:
        kwargs: dict = {} if n is None else {"num_classes": n}
        if model in _AUX_HEADS:
            kwargs.update(aux_logits=aux, init_weights=True)
        return torchvision.models.get_model(model, weights=None, **kwargs)

    return torchvision_model


def _entry_point(spec: str) -> Builder:
    module_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelError(
            f"cannot import {module_name!r} for entry point {spec!r}: {e}. Make the package "
            f"importable (pip install it, or add its folder to PYTHONPATH)"
        ) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"entry point {spec!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"entry point {spec!r} is a {type(obj).__name__}, not a callable")
    factory = obj

    def build(n: int | None) -> nn.Module:
        try:
            net = factory() if n is None else factory(num_classes=n)
        except TypeError as e:
            if n is None:
                raise ModelError(f"entry point {spec!r} needs arguments: {e}") from e
            raise ModelError(
                f"entry point {spec!r} does not accept num_classes={n} ({e}); give the factory "
                f"a num_classes argument or weights with its own number of classes"
            ) from e
        except Exception as e:
            raise ModelError(f"entry point {spec!r} raised {type(e).__name__}: {e}") from e
        if not isinstance(net, nn.Module):
            raise ModelError(f"entry point {spec!r} returned {type(net).__name__}, not a Module")
        return net

    return build


def _skeleton(builder: Builder, **kwargs) -> nn.Module:
    """The default-sized model, on the meta device when the builder allows (no init cost)."""
    try:
        with torch.device("meta"):
            return builder(None, **kwargs)
    except ModelError:
        raise
    except Exception:
        return builder(None, **kwargs)


def _final_layer(net: nn.Module) -> str | None:
    """The last registered module with a matrix / kernel weight: the classifier head."""
    name = None
    for qual, m in net.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            name = qual
    return name


def _build_with_weights(
    model: str,
    builder: Builder,
    state: dict[str, torch.Tensor] | None,
    path: Path | None,
    num_classes: int | None,
    seed: int,
) -> nn.Module:
    kwargs = {}
    if model in _AUX_HEADS:
        kwargs["aux"] = state is not None and any(k.startswith(_AUX_HEADS[model]) for k in state)
    n = num_classes
    if n is None and state is not None:
        skeleton = _skeleton(builder, **kwargs)
        head = _final_layer(skeleton)
        key = f"{head}.weight"
        if head is not None and key in state and state[key].dim() >= 2:
            default = skeleton.get_parameter(key).shape[0]
            n = int(state[key].shape[0]) if state[key].shape[0] != default else None
    torch.manual_seed(seed)
    net = builder(n, **kwargs)
    if state is not None:
        _check_fit(net, state, model, path)
        net.load_state_dict(state, strict=False)
    return net


def _check_fit(net: nn.Module, state: Mapping[str, torch.Tensor], arch: str, path) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatch = next(
        (k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)),
        None,
    )
    if not (missing or unexpected or mismatch):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if mismatch:
        problems.append(
            f"first shape mismatch: {mismatch} is {list(state[mismatch].shape)} in the file but "
            f"{list(expected[mismatch].shape)} in the model"
        )
    raise ModelError(
        f"weights {path} do not fit {arch}: {'; '.join(problems)}. Check that the model name is "
        f"the architecture the weights were trained with (and num_classes, if you set it)."
    )


# ----------------------------------------------------------------------------- files


def _read_weights(path: Path) -> tuple[str, object]:
    """("torchscript" | "module", nn.Module) or ("state_dict", dict of tensors)."""
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    if _is_torchscript(path):
        try:
            return "torchscript", torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelError(f"{path} looks like TorchScript but does not load: {e}") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except (AttributeError, ModuleNotFoundError) as e:
            raise ModelError(
                f"{path} is a saved module whose class cannot be imported ({e}). Make the "
                f"defining package importable, or save a state_dict and name the architecture."
            ) from e
        except Exception as e:
            raise ModelError(
                f"{path} is none of the accepted formats (state_dict or checkpoint, saved module, "
                f"TorchScript): {type(safe_error).__name__}: {str(safe_error)[:200]}"
            ) from e
    return _classify(obj, path)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def _classify(obj: object, path: Path) -> tuple[str, object]:
    if isinstance(obj, nn.Module):
        return "module", obj
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a state_dict or a module")
    for key in _NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, nn.Module):
            return "module", inner
        if isinstance(inner, Mapping) and inner:
            obj = inner
            break
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise ModelError(
            f"{path} is not a state_dict: key {bad!r} holds a {type(obj[bad]).__name__}. Expected "
            f"a state_dict, a checkpoint nesting one under {' / '.join(_NESTED_KEYS)}, a saved "
            f"module or a TorchScript file."
        )
    state = dict(obj)
    for prefix in _KEY_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return "state_dict", state


def _read_sidecar(side: Path) -> dict:
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"sidecar {side} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ModelError(f"sidecar {side} must hold a JSON object with classes/input_size/mean/std")
    return data


PREPROCESSING_ATTR = "neurflow_preprocessing"


def _declared_preprocessing(net: nn.Module, model: str) -> dict:
    """What a factory's module declares in `neurflow_preprocessing` (the keys of a sidecar JSON:
    mean, std, input_size, classes, and layers, the default layer list), checked like a sidecar."""
    declared = getattr(net, PREPROCESSING_ATTR, None)
    if declared is None:
        return {}
    if not isinstance(declared, dict):
        raise ModelError(f"{model}: {PREPROCESSING_ATTR} must be a dict, not {type(declared).__name__}")
    unknown = sorted(set(declared) - {"mean", "std", "input_size", "classes", "layers"})
    if unknown:
        raise ModelError(
            f"{model}: {PREPROCESSING_ATTR} has unknown keys {unknown}; use mean, std, input_size, "
            "classes, layers"
        )
    return dict(declared)


def _state_sha256(net: nn.Module) -> str:
    """A content hash of a module's parameters and buffers (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _planted_weights_path(model: str = "planted_cnn") -> Path:
    from ingest.planted.model import WEIGHTS_DIR

    path = Path(WEIGHTS_DIR) / f"{model}.pt"
    if not path.is_file():
        raise ModelError(
            f"the {model} model's shipped weights are missing ({path}); regenerate them with "
            f"`python -m ingest.planted.train --arch {model}`, or pass weights"
        )
    return path


# ----------------------------------------------------------------------------- checks, defaults


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"unknown device {device!r}: {e}; use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"device {device!r} requested but CUDA is not available here (torch {torch.__version__}"
            f", CUDA build {torch.version.cuda}); use device cpu"
        )
    return dev


def _check_classifier(net: nn.Module, size: int, dev: torch.device, arch: str) -> int:
    """Run one dummy image; the output must be a [1, num_classes] tensor."""
    probe = torch.zeros(1, 3, size, size, device=dev)
    try:
        with torch.no_grad():
            out = net(probe)
    except Exception as e:
        raise ModelError(
            f"{arch} fails on a dummy {size}x{size} RGB image ({type(e).__name__}: {e}); "
            f"set the input size the model expects"
        ) from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        what = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{arch} is not a classifier: on a [1, 3, {size}, {size}] input it returns {what}, "
            f"not [batch, num_classes] logits. Wrap it so forward returns the class logits."
        )
    return int(out.shape[1])


def _planted_world(model: str):
    """The module holding a planted model's CLASS_NAMES, INPUT_SIZE, MEAN and STD: the toys CNN
    has its own world (`ingest/planted/toys_model.py`), the others share the insect world's."""
    if model == "planted_toys_cnn":
        from ingest.planted import toys_model

        return toys_model
    from ingest.planted import model as planted

    return planted


def _default_input_size(model: str) -> int:
    if model in PLANTED_MODELS:
        return int(_planted_world(model).INPUT_SIZE)
    return 299 if model == "inception_v3" else 224


def _default_norm(model: str, attr: str, fallback: tuple[float, float, float]):
    if model in PLANTED_MODELS:
        return tuple(getattr(_planted_world(model), attr))
    return fallback


def _triple(value, default, what: str) -> tuple[float, float, float]:
    value = default if value is None else value
    if len(value) != 3:
        raise ModelError(f"{what} must have 3 values (one per RGB channel), got {value!r}")
    return tuple(float(v) for v in value)


def _class_names(model: str, sidecar: dict, n: int, path: Path | None) -> list[str] | None:
    names = sidecar.get("classes")
    if names is None and model in PLANTED_MODELS:
        names = _planted_world(model).CLASS_NAMES
    if names is None:
        return None
    names = [str(c) for c in names]
    if len(names) != n:
        raise ModelError(
            f"{len(names)} class names (from {path.with_suffix('.json') if path else model}) "
            f"but the model outputs {n} classes"
        )
    return names


def _layers_for(model: str, net: nn.Module) -> list[str] | None:
    """The shipped layer list for `model`, if every name in it exists in `net`."""
    from ingest.core.layers import LayerError, default_layers

    try:
        layers = default_layers(model)
    except (LayerError, ImportError):
        return None
    present = {name for name, _ in net.named_modules()}
    return layers if all(n in present for n in layers) else None
