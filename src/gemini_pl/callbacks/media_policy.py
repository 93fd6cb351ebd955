"""Whether pictures of the data may leave the machine (go to W&B).

Images of the paper's datasets are under data use agreements: pictures drawn from them (overlays,
warped images) stay on disk unless the user asks for them to be uploaded, ``gemini-pl ...
--log_media true`` (which sets :data:`TRAINER_ATTR` on the trainer). Generated data (phantoms, the
MNI152-derived subjects) carries no agreement: its pictures go to W&B by default.
``--log_media false`` keeps every picture local.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GENERATED_PREFIXES", "TRAINER_ATTR", "generated_data", "upload_media_allowed"]

#: the trainer attribute the CLI sets from ``--log_media`` (True / False; absent or None: decide)
TRAINER_ATTR = "gemini_log_media"
#: dataset names of generated data (no use agreement)
GENERATED_PREFIXES = ("phantom", "mni")


def generated_data(datamodule: Any) -> bool:
    """Whether the data module serves generated data (a phantom, the MNI152-derived subjects)."""
    if datamodule is None:
        return False
    if getattr(datamodule, "phantom", None) is not None:
        return True
    name = str(getattr(datamodule, "dataset", "") or "")
    return name.startswith(GENERATED_PREFIXES)


def upload_media_allowed(trainer: Any, explicit: bool | None = None) -> bool:
    """``explicit`` if given, else the trainer's ``--log_media`` choice, else whether the data is
    generated (:func:`generated_data`)."""
    if explicit is not None:
        return bool(explicit)
    chosen = getattr(trainer, TRAINER_ATTR, None)
    if chosen is not None:
        return bool(chosen)
    return generated_data(getattr(trainer, "datamodule", None))
