"""WHS-CT: the CT part of the MM-WHS 2017 whole-heart segmentation challenge (3D cardiac CT)."""

from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

#: MM-WHS label value -> class index.
LABEL_TABLE = {
    205: 1,  # left-ventricle myocardium
    420: 2,  # left-atrium blood cavity
    500: 3,  # left-ventricle blood cavity
    550: 4,  # right-atrium blood cavity
    600: 5,  # right-ventricle blood cavity
    820: 6,  # ascending aorta
    850: 7,  # pulmonary artery
}

CLASS_NAMES = ("background", "LV myocardium", "LA cavity", "LV cavity", "RA cavity", "RV cavity",
               "ascending aorta", "pulmonary artery")

SPEC = DatasetSpec(
    name="whs_ct",
    title="WHS-CT (MM-WHS 2017 CT)",
    spatial_dims=3,
    suffixes=(".nii.gz", ".nii"),
    label_kind="multiclass",
    label_table=LABEL_TABLE,
    unmapped_labels="error",
    class_names=CLASS_NAMES,
    # The released files appear to be stored with +1024 already: clip [0, 2048], divide by 2048.
    preprocessing=Preprocessing(intensity="ct", offset=0.0, clip=(0.0, 2048.0)),
)
