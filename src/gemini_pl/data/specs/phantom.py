"""The generated phantoms (:mod:`gemini_pl.data.phantom`): 2D and 3D."""

from gemini_pl.data.phantom import LABEL_NAMES
from gemini_pl.data.specs.base import generated_specs

#: label value -> class index (the phantom writes class indices).
LABEL_TABLE = {v: v for v in LABEL_NAMES if v}

SPEC_2D, SPEC_3D = generated_specs("phantom", "phantoms", LABEL_TABLE, tuple(LABEL_NAMES.values()))
