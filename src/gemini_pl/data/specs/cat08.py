"""CAT08: coronary CT angiography (3D); only centerlines are annotated, the images are used."""

from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

SPEC = DatasetSpec(
    name="cat08",
    title="CAT08 (coronary CTA, images only)",
    spatial_dims=3,
    suffixes=(".nii.gz", ".nii"),
    label_kind=None,  # centerlines are not label maps
    preprocessing=Preprocessing(intensity="ct", offset=0.0, clip=(0.0, 2048.0)),
)
