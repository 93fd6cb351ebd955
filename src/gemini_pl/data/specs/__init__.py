"""One spec per dataset: where its files are, its label table and its preprocessing.

=============  ===========================  ==========================================
name           module                       what
=============  ===========================  ==========================================
whs_ct         :mod:`.whs_ct`               MM-WHS CT, labels 205..850 -> 1..7
asoca          :mod:`.asoca`                ASOCA coronary CTA
cat08          :mod:`.cat08`                CAT08 coronary CTA (images only)
candi          :mod:`.candi`                CANDI brain MRI, 28 FreeSurfer codes -> 1..28
scr            :mod:`.scr`                  SCR chest X-rays, heart/lung/clavicle masks
kipa22         :mod:`.kipa22`               KiPA22 kidney CTA, 1..4
chestxray8     :mod:`.chestxray8`           ChestX-ray8, pairs within view x sex groups
ppmi           :mod:`.ppmi`                 PPMI brain MRI (images only)
phantom2d/3d   :mod:`.phantom`              the generated phantoms
mni2d/3d       :mod:`.mni`                  brain subjects generated from the MNI152 template
synthseg2d/3d  :mod:`.synthseg`             20 real brains (SynthSeg label maps), synthesised T1
=============  ===========================  ==========================================

Any other ``data.dataset`` name is a folder read with :func:`generic_spec` (labels are class
indices already, min-max intensities): the canonical layout, or simply a folder of image files
(NIfTI, NRRD, MetaImage, PNG), which are then the unlabeled training images.
"""

from __future__ import annotations

import dataclasses

from gemini_pl.data.specs import asoca, candi, cat08, chestxray8, kipa22, mni, phantom, ppmi, scr, synthseg, whs_ct
from gemini_pl.data.specs.base import BRAIN_MASK_MODES, INTENSITY_MODES, DatasetSpec, Preprocessing

__all__ = [
    "BRAIN_MASK_MODES", "INTENSITY_MODES", "DatasetSpec", "Preprocessing", "SPECS",
    "generic_spec", "get_spec",
]

#: name -> spec of every known dataset.
SPECS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        whs_ct.SPEC, asoca.SPEC, cat08.SPEC, candi.SPEC, scr.SPEC, kipa22.SPEC, chestxray8.SPEC,
        ppmi.SPEC, phantom.SPEC_2D, phantom.SPEC_3D, mni.SPEC_2D, mni.SPEC_3D, synthseg.SPEC_2D,
        synthseg.SPEC_3D,
    )
}


def generic_spec(name: str) -> DatasetSpec:
    """Spec of an unknown dataset folder ``name``: labels used as they are; the canonical layout,
    or (``flat``) the image files directly inside the folder as unlabeled training images."""
    from gemini_pl.data.io import IMAGE_SUFFIXES

    return DatasetSpec(name=name, title=name, label_table=None, preprocessing=Preprocessing(),
                       layout="flat", suffixes=IMAGE_SUFFIXES)


def get_spec(name: str) -> DatasetSpec:
    """The registered spec ``name`` (a copy), or :func:`generic_spec` for any other name."""
    spec = SPECS.get(name)
    return dataclasses.replace(spec) if spec is not None else generic_spec(name)
