"""KiPA22: kidney parsing in CT angiography (3D; MIP downstream T2)."""

from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

#: Label values as distributed -> class index (override with data.label_table if yours differ).
LABEL_TABLE = {
    1: 1,  # renal vein
    2: 2,  # kidney
    3: 3,  # renal artery
    4: 4,  # tumour
}

SPEC = DatasetSpec(
    name="kipa22",
    title="KiPA22 (kidney CTA)",
    spatial_dims=3,
    suffixes=(".nii.gz", ".nii"),
    label_kind="multiclass",
    label_table=LABEL_TABLE,
    class_names=("background", "renal vein", "kidney", "renal artery", "tumour"),
    # set data.preprocessing.offset: 1024 when the files hold plain HU (check-data prints ranges)
    preprocessing=Preprocessing(intensity="ct", offset=0.0, clip=(0.0, 2048.0)),
)
