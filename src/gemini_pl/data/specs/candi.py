"""CANDI: brain T1 MRI (3D) with FreeSurfer-style segmentations (Semi T2, MIP downstream T3)."""

from gemini_pl.data.specs.base import DatasetSpec, Preprocessing

#: The 28 FreeSurfer codes used, in class order (code -> class 1..28); every other code -> 0.
FREESURFER_CODES = (2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 28,
                    41, 42, 43, 46, 47, 49, 50, 51, 52, 53, 54, 60)

#: FreeSurfer code -> class index.
LABEL_TABLE = {code: i + 1 for i, code in enumerate(FREESURFER_CODES)}

CLASS_NAMES = (
    "background",
    "Left-Cerebral-White-Matter", "Left-Cerebral-Cortex", "Left-Lateral-Ventricle",
    "Left-Cerebellum-White-Matter", "Left-Cerebellum-Cortex", "Left-Thalamus", "Left-Caudate",
    "Left-Putamen", "Left-Pallidum", "3rd-Ventricle", "4th-Ventricle", "Brain-Stem",
    "Left-Hippocampus", "Left-Amygdala", "CSF", "Left-VentralDC",
    "Right-Cerebral-White-Matter", "Right-Cerebral-Cortex", "Right-Lateral-Ventricle",
    "Right-Cerebellum-White-Matter", "Right-Cerebellum-Cortex", "Right-Thalamus", "Right-Caudate",
    "Right-Putamen", "Right-Pallidum", "Right-Hippocampus", "Right-Amygdala", "Right-VentralDC",
)

SPEC = DatasetSpec(
    name="candi",
    title="CANDI (brain T1 MRI)",
    spatial_dims=3,
    suffixes=(".nii.gz",),
    label_kind="multiclass",
    label_table=LABEL_TABLE,
    unmapped_labels="background",  # other FreeSurfer codes are background
    class_names=CLASS_NAMES,
    # Every image of every split is multiplied by its brain mask (the published preprocessing):
    # unlabeled images carry it under train/unlabeled/label/<name>, labeled training and test cases
    # under <split>/mask/<name>; a missing mask is an error (preprocessing: {brain_mask: none}
    # switches masking off for all splits).
    mask_dirs={"unlabeled": ("label", "mask"), "labeled": ("mask",)},
    preprocessing=Preprocessing(intensity="minmax", brain_mask="file"),
)
