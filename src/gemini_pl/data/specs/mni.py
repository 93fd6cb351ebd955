"""The real-anatomy demo data generated from the MNI152 template (:mod:`gemini_pl.data.anatomy`): 2D and 3D."""

from gemini_pl.data.specs.base import generated_specs

#: the generator's labels (the tissue of the template's probability maps)
LABEL_NAMES = {0: "background", 1: "grey matter", 2: "white matter"}

#: label value -> class index (the generator writes class indices).
LABEL_TABLE = {v: v for v in LABEL_NAMES}

SPEC_2D, SPEC_3D = generated_specs("mni", "MNI152-derived brain images (2 mm)", LABEL_TABLE, tuple(LABEL_NAMES.values()))
