"""PPMI: brain T1 MRI (3D) for 3D pre-training; images only, in one flat folder."""

from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

SPEC = DatasetSpec(
    name="ppmi",
    title="PPMI (brain T1 MRI)",
    folder="brain",
    spatial_dims=3,
    layout="flat",
    suffixes=(".nii", ".nii.gz"),
    label_kind=None,
    preprocessing=Preprocessing(intensity="minmax", brain_mask="none"),
)
