"""A trained module and its data settings from a gemini-pl checkpoint, for ``register`` and ``segment``.

A checkpoint written by ``gemini-pl fit`` holds the module's class (``hyper_parameters._class_path``)
and arguments, and the data module's arguments (``datamodule_hyper_parameters``: the dataset,
whose spec gives the preprocessing, and its overrides, the training ``patch_size``). From them
:func:`load_model` rebuilds the module (weights read with ``weights_only=True``), and
:class:`Loaded` says how a new image must be prepared: the intensity preprocessing, the grid
(orientation / spacing / resize of the training data) and the sliding window (in 3D the training
patch, unless the module names its own ``roi_size``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.specs import DatasetSpec, Preprocessing, get_spec
from ..errors import CheckpointError, ConfigError
from ..safe_load import safe_torch_load

__all__ = ["Loaded", "data_spec", "load_model"]

log = logging.getLogger(__name__)

#: hyper-parameters that are no arguments of the module (LightningCLI's bookkeeping)
_BOOKKEEPING = ("_class_path", "_instantiator")


@dataclass
class Loaded:
    """A module ready for inference and what its training data looked like."""

    model: Any
    path: Path
    spec: DatasetSpec
    roi_size: list[int] | None
    notes: list[str] = field(default_factory=list)

    @property
    def spatial_dims(self) -> int:
        return int(self.model.hparams.spatial_dims)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def data_spec(dm: dict[str, Any] | None) -> tuple[DatasetSpec, list[str]]:
    """The dataset spec, with the config's overrides, of a checkpoint's data-module arguments
    (as ``GeminiDataModule`` resolves them), and notes on what could not be known."""
    from ..data.phantom_options import PhantomOptions

    notes: list[str] = []
    if not dm or not dm.get("dataset"):
        notes.append("the checkpoint holds no data settings: min-max intensities on each image's own grid")
        return get_spec("custom"), notes
    name = str(dm["dataset"])
    phantom = dm.get("phantom") is not None or str(dm.get("_class_path", "")).endswith("PhantomDataModule")
    spec = PhantomOptions.spec(name) if phantom else get_spec(name)
    prep = dict(dm.get("preprocessing") or {})
    if dm.get("intensity") is not None:
        prep.setdefault("intensity", dm["intensity"])
    if prep.get("intensity") == "ct" and spec.preprocessing.clip is None and "clip" not in prep:
        prep["clip"] = (0.0, 2048.0)
    known = {f for f in Preprocessing.__dataclass_fields__}
    unknown = sorted(set(prep) - known)
    if unknown:
        notes.append(f"data.preprocessing keys {unknown} are not applied to new images")
        prep = {k: v for k, v in prep.items() if k in known}
    spec = spec.with_overrides(label_table=dm.get("label_table"), preprocessing=prep, spatial_dims=dm.get("spatial_dims"))
    if spec.preprocessing.brain_mask != "none":
        notes.append(f"the training images were brain-masked (brain_mask={spec.preprocessing.brain_mask}); "
                     "new images are used as given (mask them beforehand for the same input)")
    return spec, notes


def _module_class(hparams: dict[str, Any], path: Path, model_class: str | None) -> type:
    class_path = model_class or hparams.get("_class_path")
    if not class_path:
        raise CheckpointError(
            f"{path} does not name its module class (no hyper_parameters._class_path: not written by "
            "gemini-pl fit); give it with --model-class, e.g. gemini_pl.modules.Segmentation"
        )
    if "." not in class_path:
        class_path = f"gemini_pl.modules.{class_path}"
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{path}: module class {class_path} cannot be imported: {exc}") from None


def _init_names(cls: type) -> set[str] | None:
    """Argument names of ``cls``'s ``__init__`` chain (following ``**kwargs``); None: any."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY) and p != "self"}
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            return names
    return None


def _build(cls: type, kwargs: dict[str, Any], path: Path) -> Any:
    """``cls(**kwargs)``; an argument that the class sets itself for its parent (e.g. a segmentation
    head's ``out_channels`` = ``num_classes``) is recorded among the hyper-parameters too and is
    dropped when the call names it twice."""
    kwargs = dict(kwargs)
    for _ in range(len(kwargs) + 1):
        try:
            return cls(**kwargs)
        except TypeError as exc:
            match = re.search(r"multiple values for keyword argument '(\w+)'", str(exc))
            if match is None or match.group(1) not in kwargs:
                raise CheckpointError(f"{path}: cannot rebuild {cls.__name__} from its hyper-parameters: {exc}") from None
            kwargs.pop(match.group(1))
        except ConfigError as exc:
            raise CheckpointError(f"{path}: cannot rebuild {cls.__name__} from its hyper-parameters: {exc}") from None
    raise CheckpointError(f"{path}: cannot rebuild {cls.__name__} from its hyper-parameters")


def load_model(path: str | Path, device: str | torch.device = "cpu", need: str = "deformer",
               model_class: str | None = None) -> Loaded:
    """The module of checkpoint ``path`` in eval mode on ``device``, with its data settings.

    ``need``: ``"deformer"`` (a registration path: ``GeminiPretrain``, ``GeminiSemi``,
    ``Registration``, ``VMAtlas``) or ``"head"`` (a segmentation head: ``Segmentation``,
    ``GeminiSemi``, the semi-supervised baselines); a checkpoint without it is a CheckpointError
    naming the module. ``model_class``: the class when the checkpoint does not name it.
    """
    from ..modules.reg_eval import RegistrationEvaluation
    from ..modules.seg_eval import SegmentationEvaluation

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    cls = _module_class(hparams, path, model_class)
    wanted = RegistrationEvaluation if need == "deformer" else SegmentationEvaluation
    if not issubclass(cls, wanted):
        what = "a deformer (registration)" if need == "deformer" else "a segmentation head"
        raise CheckpointError(f"{path} holds a {cls.__name__}, which has no {what}; use a checkpoint of "
                              + ("GeminiPretrain, GeminiSemi or Registration" if need == "deformer" else "Segmentation or GeminiSemi"))
    if need == "head" and "head" not in cls.network_parts:
        raise CheckpointError(f"{path} holds a {cls.__name__}, which segments without a segmentation head (e.g. by "
                              "registering atlases of its training data); evaluate it with gemini-pl test")
    names = _init_names(cls)
    kwargs = {k: v for k, v in hparams.items() if k not in _BOOKKEEPING and (names is None or k in names)}
    if "init_from" in kwargs:
        kwargs["init_from"] = None  # the weights come from this checkpoint
    model = _build(cls, kwargs, path)
    net_state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        model.net.load_state_dict(net_state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: the network weights do not fit {cls.__name__}: {first}") from None
    model.eval().to(device)
    spec, notes = data_spec(ckpt.get("datamodule_hyper_parameters"))
    roi = hparams.get("roi_size")
    if roi is None and model.hparams.spatial_dims == 3:
        roi = (ckpt.get("datamodule_hyper_parameters") or {}).get("patch_size")
    roi = [int(r) for r in roi] if roi is not None else None
    model.roi_size = roi
    if need == "head":
        model.setup_segmentation()
        model.roi_size = roi
        model.to(device)
    return Loaded(model=model, path=path, spec=spec, roi_size=roi, notes=notes)
