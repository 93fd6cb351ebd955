"""ASOCA: coronary CT angiography (3D), used as extra cardiac CT images (Semi T1)."""

from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

#: ASOCA annotations: 1 = coronary artery tree.
LABEL_TABLE = {1: 1}

SPEC = DatasetSpec(
    name="asoca",
    title="ASOCA (coronary CTA)",
    spatial_dims=3,
    suffixes=(".nii.gz", ".nii"),
    label_kind="multiclass",
    label_table=LABEL_TABLE,
    class_names=("background", "coronary artery"),
    preprocessing=Preprocessing(intensity="ct", offset=0.0, clip=(0.0, 2048.0)),
)
