"""Initialising a downstream network from pre-trained weights (shared by Segmentation and Registration).

Three sources are recognised by their key names:

* an **official GEMINI checkpoint** (``unet.*``, ``deformer.0.*``, ``deformer.1.*``, ``res_conv.*``;
  e.g. ``GEMINI_SS_MIP_3d_epoch_1000.pth``), mapped with :func:`~gemini_pl.nets.official_to_ours`;
* a **Lightning checkpoint** of a gemini-pl module (``GeminiPretrain``, ``GeminiSemi``,
  ``Segmentation``, ``Registration``: ``state_dict`` keys ``net.backbone.*`` …);
* a plain ``state_dict`` of a :class:`~gemini_pl.nets.GeminiNet` (``backbone.*`` …).

Files are read with ``weights_only=True`` (:func:`~gemini_pl.nets.load_state_dict_file`): a pickled
payload is refused, never executed. Only the requested parts are copied (``backbone``, and
``deformer`` / ``head`` when asked); a :class:`TransferReport` lists what was loaded, what the
target network still misses, what the file holds that the target has no place for, and shape
mismatches. Missing or mismatched keys of a *required* part raise
:class:`~gemini_pl.errors.CheckpointError` (wrong widths or dimensionality, say) — nothing is
copied then; an optional part (the head, whose number of outputs usually differs) is loaded only
when every one of its keys fits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import nn

from ..errors import CheckpointError
from ..nets import load_state_dict_file, official_to_ours

log = logging.getLogger(__name__)

__all__ = ["InitFromCheckpoint", "TransferReport", "freeze", "load_pretrained", "source_format", "to_net_keys"]

PARTS = ("backbone", "deformer", "head")


@dataclass
class TransferReport:
    """What :func:`load_pretrained` did. Key lists use the target network's names (``backbone.inc…``)."""

    source: str
    source_format: str
    parts: tuple[str, ...]
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def loaded_parts(self) -> dict[str, int]:
        """Number of loaded tensors per part."""
        out = {p: 0 for p in PARTS}
        for key in self.loaded:
            out[key.split(".", 1)[0]] = out.get(key.split(".", 1)[0], 0) + 1
        return {k: v for k, v in out.items() if v}

    def summary(self) -> str:
        """A short multi-line report (the one that is logged and printed)."""
        parts = ", ".join(f"{k} {v}" for k, v in self.loaded_parts().items()) or "nothing"
        lines = [
            f"init_from {self.source} ({self.source_format}): loaded {len(self.loaded)} tensors ({parts}); "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, shape mismatch {len(self.mismatched)}, "
            f"not requested {len(self.skipped)}",
        ]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected), ("shape mismatch", self.mismatched)):
            if items:
                lines.append(f"  {title}: " + "; ".join(items[:12]) + (f" ... (+{len(items) - 12})" if len(items) > 12 else ""))
        if self.skipped:
            kinds = sorted({k.split(".", 1)[0] for k in self.skipped})
            lines.append(f"  in the file but not copied (not requested or excluded): {', '.join(kinds)}")
        return "\n".join(lines)


def source_format(keys: Iterable[str]) -> str:
    """``"official"``, ``"lightning"`` (keys ``net.*``) or ``"gemini_net"`` (keys ``backbone.*`` …)."""
    keys = list(keys)
    if any(k.startswith(("unet.", "res_conv.", "deformer.0.", "deformer.1.")) for k in keys):
        return "official"
    if any(k.startswith("net.") for k in keys):
        return "lightning"
    return "gemini_net"


def to_net_keys(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor], list[str]]:
    """Map a source ``state_dict`` onto GeminiNet key names; returns (format, mapped, unmappable keys)."""
    fmt = source_format(state)
    mapped: dict[str, torch.Tensor] = {}
    unmappable: list[str] = []
    for key, value in state.items():
        if fmt == "official":
            target = official_to_ours(key)
        elif fmt == "lightning":
            target = key[len("net."):] if key.startswith("net.") else None
        else:
            target = key
        if target is None or target.split(".", 1)[0] not in PARTS:
            unmappable.append(key)
        else:
            mapped[target] = value
    return fmt, mapped, unmappable


def load_pretrained(
    net: nn.Module,
    path: str | Path,
    parts: Sequence[str] = ("backbone",),
    optional_parts: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> TransferReport:
    """Copy the ``parts`` (and, when they fit, the ``optional_parts``) of a weight file into ``net``.

    ``exclude``: key prefixes in the network's names (e.g. ``"backbone.up"``: the decoder of the
    U-Net) that keep their fresh initialisation; they are checked like the rest, listed in the
    report as not copied, and left out of the copy.

    ``net`` is a :class:`~gemini_pl.nets.GeminiNet` (a part may be absent, e.g. a Segmentation
    network has no deformer). Raises :class:`CheckpointError` (naming keys and shapes) when a
    required part is missing from the file or does not fit; then nothing is copied.
    """
    for p in (*parts, *optional_parts):
        if p not in PARTS:
            raise ValueError(f"unknown network part {p!r}; expected one of {PARTS}")
    state = load_state_dict_file(path)
    fmt, source, unmappable = to_net_keys(state)
    target = net.state_dict()
    report = TransferReport(str(path), fmt, tuple(parts))
    report.unexpected.extend(f"{k} {tuple(state[k].shape)}" for k in unmappable)

    chosen: dict[str, torch.Tensor] = {}
    per_part: dict[str, dict[str, list[str]]] = {}
    for part in (*parts, *optional_parts):
        ours = {k: v for k, v in target.items() if k.startswith(part + ".")}
        theirs = {k: v for k, v in source.items() if k.startswith(part + ".")}
        info = {"missing": [], "unexpected": [], "mismatched": []}
        for k, v in theirs.items():
            if k not in ours:
                info["unexpected"].append(f"{k} {tuple(v.shape)}")
            elif ours[k].shape != v.shape:
                info["mismatched"].append(f"{k} {tuple(v.shape)} vs ours {tuple(ours[k].shape)}")
        info["missing"] = [f"{k} {tuple(v.shape)}" for k, v in ours.items() if k not in theirs]
        per_part[part] = info
        fits = bool(ours) and not any(info.values())
        if part in parts and not fits:
            if not ours:
                info["missing"].append(f"(this network has no {part})")
            lines = [f"{path} does not fit this network's {part} (format {fmt}):"]
            for title in ("mismatched", "missing", "unexpected"):
                items = info[title]
                if items:
                    lines.append(f"  {title} ({len(items)}): " + "; ".join(items[:12]) + (" ..." if len(items) > 12 else ""))
            lines.append("  check model.widths / spatial_dims / in_channels against the checkpoint")
            raise CheckpointError("\n".join(lines))
        if fits:
            chosen.update({k: source[k] for k in ours if not k.startswith(tuple(exclude))})
        else:  # optional part that does not fit: keep it as initialised, and say so
            report.missing.extend(info["missing"])
            report.unexpected.extend(info["unexpected"])
            report.mismatched.extend(info["mismatched"])
    wanted = {*parts, *optional_parts}
    report.skipped.extend(sorted(k for k in source if k.split(".", 1)[0] not in wanted or (k in target and k not in chosen
                                                                                          and k.startswith(tuple(exclude)))))
    net.load_state_dict(chosen, strict=False)
    report.loaded.extend(sorted(chosen))
    _announce(report)
    return report


@rank_zero_only
def _announce(report: TransferReport) -> None:
    text = report.summary()
    log.info(text)
    print(text, flush=True)


def freeze(module: nn.Module) -> int:
    """``requires_grad = False`` for every parameter of ``module``; returns how many tensors."""
    n = 0
    for p in module.parameters():
        p.requires_grad_(False)
        n += 1
    return n


class InitFromCheckpoint:
    """LightningModule mixin: copy ``hparams.init_from`` into ``self.net`` once, at the start of a run.

    The copy happens in ``on_fit_start`` (or at the start of validate/test/predict when no fit
    runs), i.e. after Lightning has restored a ``--ckpt_path`` checkpoint — so that it only
    happens when no checkpoint is given: a resumed run or an evaluated checkpoint keeps its own
    weights, and the ``init_from`` file is not even read then. ``init_parts`` must fit,
    ``init_optional_parts`` are copied when they fit; the hyper-parameter ``init_exclude`` (key
    prefixes, e.g. ``["backbone.up"]`` for the encoder only) keeps those weights freshly initialised. The report is kept in ``transfer_report``.
    """

    init_parts: tuple[str, ...] = ("backbone",)
    transfer_report: TransferReport | None = None
    _init_done: bool = False

    def init_optional_parts(self) -> tuple[str, ...]:
        return ()

    def init_from_checkpoint(self) -> TransferReport | None:
        path = getattr(self.hparams, "init_from", None)
        if not path or self._init_done or getattr(self.trainer, "ckpt_path", None):
            return None
        self.transfer_report = load_pretrained(self.net, path, parts=self.init_parts, optional_parts=self.init_optional_parts(),
                                               exclude=tuple(self.hparams.get("init_exclude") or ()))
        self._init_done = True
        self._check_deformation_model(path)
        return self.transfer_report

    def _check_deformation_model(self, path: str) -> None:
        """Warn when a transferred deformer was trained with another ``integration_steps``: its
        output meant a velocity field there and a displacement here, or the other way round (allowed —
        the fine-tuning adapts it — but rarely what a user means)."""
        ours = self.hparams.get("integration_steps")
        if ours is None or not any(k.startswith("deformer.") for k in self.transfer_report.loaded):
            return
        from ..safe_load import safe_torch_load

        ckpt = safe_torch_load(path)
        hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
        if not isinstance(hparams, dict):  # a plain state_dict: nothing says how it was trained
            return
        theirs = int(hparams.get("integration_steps", 0))
        if theirs == int(ours):
            return

        def meaning(n: int) -> str:
            return f"a velocity field integrated in {n} steps" if n else "a displacement"

        rank_zero_warn(f"init_from {path}: its deformer was trained with integration_steps={theirs} "
                       f"(output = {meaning(theirs)}), this model reads it with integration_steps={int(ours)} "
                       f"({meaning(int(ours))}); set model.init_args.integration_steps={theirs} to keep its meaning")

    def on_fit_start(self) -> None:
        self.init_from_checkpoint()

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":  # during fit, on_fit_start has done it
            self.init_from_checkpoint()

    def on_test_start(self) -> None:
        self.init_from_checkpoint()

    def on_predict_start(self) -> None:
        self.init_from_checkpoint()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._init_done = True  # weights come from a checkpoint
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
