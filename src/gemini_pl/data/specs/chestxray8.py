"""ChestX-ray8 (NIH): 112,120 chest X-rays (2D PNG 1024²) for 2D pre-training; no labels.

Pairs are drawn within one group of view position (AP/PA) x sex (F/M).
"""

from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

GROUPS = ("AP_F", "AP_M", "PA_F", "PA_M")

SPEC = DatasetSpec(
    name="chestxray8",
    title="ChestX-ray8 (NIH)",
    folder="chestxray",
    spatial_dims=2,
    layout="groups",
    suffixes=(".png",),
    label_kind=None,
    groups=GROUPS,
    metadata_csv="Data_Entry_2017.csv",
    csv_name_column="Image Index",
    csv_group_columns=("View Position", "Patient Gender"),
    csv_image_dir="images",
    preprocessing=Preprocessing(intensity="xray", resize=(512, 512)),
)
