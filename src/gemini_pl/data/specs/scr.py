"""SCR: Segmentation in Chest Radiographs (JSRT images, 2D PNG) with three binary masks."""

from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

#: multi-label channels: one mask folder each under ``label/`` (binary, > 0 is foreground).
LABEL_CHANNELS = ("heart", "lung", "clavicle")

SPEC = DatasetSpec(
    name="scr",
    title="SCR (JSRT chest X-rays)",
    spatial_dims=2,
    suffixes=(".png",),
    label_kind="multilabel",
    label_channels=LABEL_CHANNELS,
    class_names=LABEL_CHANNELS,
    preprocessing=Preprocessing(intensity="xray", resize=(512, 512)),
)
