"""The generated phantoms (:mod:`gemini_pl.data.phantom`): 2D and 3D."""

from gemini_pl.data.phantom import LABEL_NAMES
from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

#: label value -> class index (the phantom writes class indices).
LABEL_TABLE = {v: v for v in LABEL_NAMES if v}

SPEC_2D = DatasetSpec(
    name="phantom2d", title="2D phantoms", spatial_dims=2, label_table=LABEL_TABLE,
    class_names=tuple(LABEL_NAMES.values()), preprocessing=Preprocessing(intensity="minmax"),
)
SPEC_3D = DatasetSpec(
    name="phantom3d", title="3D phantoms", spatial_dims=3, label_table=LABEL_TABLE,
    class_names=tuple(LABEL_NAMES.values()), preprocessing=Preprocessing(intensity="minmax"),
)
