"""CAT08 (``cat08``): coronary CTA as MetaImage, ``datasetNN/imageNN.mhd`` + ``imageNN.raw``.

Format, as distributed by the Rotterdam Coronary Artery Algorithm Evaluation Framework (Schaap et
al., MICCAI 2008 workshop; coronary.bigr.nl): 32 folders ``dataset00`` ... ``dataset31``, each
with the CTA volume ``imageNN.mhd`` (MetaImage header: ``DimSize``, ``ElementSpacing``,
``Offset``, ``TransformMatrix``, ``ElementDataFile`` naming the ``.raw`` data next to it) and
``vessel0`` ... ``vessel3`` centerline folders (not label maps: not used). An ``.mhd`` whose data
file is missing is reported naming it; one not named ``imageNN.mhd`` is reported with that pattern.

Written: ``train/unlabeled/image/cat08_NN.nii.gz`` (images only), geometry from the header,
intensities HU + 1024 (``common.write_ct``).
"""

from __future__ import annotations

import re
from functools import partial

from gemini_pl.data.convert.base import Context, Item, Plan, Source, find_files
from gemini_pl.data.convert.whs_ct import _image

DATASET = "cat08"
ALIASES = ()
TITLE = "CAT08: datasetNN/imageNN.mhd + .raw (MetaImage), images only"
EXPECTED = 32
PATTERN = re.compile(r"^image(\d{2})\.mhd$", re.I)


def data_file(mhd) -> str | None:
    """The ``ElementDataFile`` of a MetaImage header (None when absent or ``LOCAL``)."""
    for line in mhd.read_text(encoding="latin-1", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            value = value.strip()
            return None if value.upper() == "LOCAL" else value
    return None


def plan(ctx: Context) -> Plan:
    p = Plan()
    off = ctx.options.get("ct_offset", "auto")
    for f in find_files(ctx.src, ["*.mhd"]):
        m = PATTERN.match(f.name)
        if m is None:
            p.problems.append(f"{f}: not a CAT08 image name (expected datasetNN/imageNN.mhd)")
            continue
        sources = [Source(f)]
        raw = data_file(f)
        if raw is not None:
            if not (f.parent / raw).is_file():
                p.problems.append(f"{f}: its data file {f.parent / raw} is missing")
                continue
            sources.append(Source(f.parent / raw))
        name = f"cat08_{m.group(1)}"
        p.items.append(Item((f"train/unlabeled/image/{name}.nii.gz",), tuple(sources), partial(_image, f, off),
                            case=name, group=name))
    return p
