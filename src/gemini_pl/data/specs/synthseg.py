"""Real inter-subject brain anatomy from the 20 SynthSeg training label maps (:mod:`gemini_pl.data.brains`): 2D and 3D.

T1-like intensities synthesised from real label maps: the labels are the 20 FreeSurfer-style
whole-head segmentations of ``data/training_label_maps`` in the SynthSeg repository (Billot et al.,
Medical Image Analysis 2023; Apache-2.0), grouped into the 11 classes below (left and right merged),
affinely pre-aligned and stored at 2 mm inside the package
(``gemini_pl/data/assets/synthseg_labels_2mm.npz``, with the licence and a NOTICE); the images are
synthesised per structure by the generator. Skull-stripped: every non-brain label is background.
"""

from gemini_pl.data.specs.base import generated_specs

#: class index -> name (the generator writes class indices).
LABEL_NAMES = {
    0: "background",
    1: "cerebral white matter",
    2: "cerebral cortex",
    3: "lateral ventricles",
    4: "cerebellum",
    5: "thalamus",
    6: "caudate + accumbens",
    7: "putamen + pallidum",
    8: "hippocampus + amygdala",
    9: "brainstem + ventral DC",
    10: "3rd + 4th ventricles",
}

#: class index -> the FreeSurfer label values of the source maps grouped into it (left, right
#: merged). Every other value is background: 0, extra-cerebral CSF (24), the optic chiasm (85) and
#: SynthSeg's non-brain head labels (500 and above). White matter takes the white-matter lesions
#: (25, 57) and vessels (30, 62); the lateral ventricles take their inferior horns (5, 44), the
#: 5th ventricle (72) and the small unnamed labels SynthSeg places on the ventricles' walls (136,
#: 163) and in the inferior horns (137, 164).
FREESURFER_GROUPS = {
    1: (2, 41, 25, 57, 30, 62),
    2: (3, 42),
    3: (4, 43, 5, 44, 72, 136, 163, 137, 164),
    4: (7, 8, 46, 47),
    5: (10, 49),
    6: (11, 50, 26, 58),
    7: (12, 13, 51, 52),
    8: (17, 18, 53, 54),
    9: (16, 28, 60),
    10: (14, 15),
}

#: label value -> class index (the generator writes class indices).
LABEL_TABLE = {v: v for v in LABEL_NAMES}

SPEC_2D, SPEC_3D = generated_specs(
    "synthseg", "brains from the SynthSeg label maps, T1-like intensities synthesised from real label maps (2 mm)",
    LABEL_TABLE, tuple(LABEL_NAMES.values()))
