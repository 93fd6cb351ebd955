"""The real-anatomy demo data generated from the MNI152 template (:mod:`gemini_pl.data.anatomy`): 2D and 3D."""

from gemini_pl.data.anatomy import LABEL_NAMES
from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

#: label value -> class index (the generator writes class indices).
LABEL_TABLE = {v: v for v in LABEL_NAMES}

SPEC_2D = DatasetSpec(
    name="mni2d", title="MNI152-derived brain slices (2 mm)", spatial_dims=2, label_table=LABEL_TABLE,
    class_names=tuple(LABEL_NAMES.values()), preprocessing=Preprocessing(intensity="minmax"),
)
SPEC_3D = DatasetSpec(
    name="mni3d", title="MNI152-derived brain volumes (2 mm)", spatial_dims=3, label_table=LABEL_TABLE,
    class_names=tuple(LABEL_NAMES.values()), preprocessing=Preprocessing(intensity="minmax"),
)
