"""The pre-training rows of Tables III and VI (GEMINI-MIP's comparison), one small file per method.

Each method pre-trains the GEMINI backbone on unlabeled images (``data.train_mode: pairs``; a pair's
two images are used as single images, except by GVSL-MIP, which registers them) and leaves it under
``net.backbone``, which ``Segmentation(init_from=<checkpoint>)`` fine-tunes. Configs:
``experiments/mip/methods/<key>.yaml`` (paper scale) and ``experiments/mip/phantom/methods/<key>.yaml``.

* restoration (:mod:`.restoration`): :class:`Denoising`, :class:`Inpainting`, :class:`ModelsGenesis`;
* pretext: :class:`Rotation`;
* global, two views (:mod:`.base`): :class:`SimSiam`, :class:`BYOL`, :class:`SimCLR`, :class:`MoCoV2`;
* clustering: :class:`DeepCluster`;
* registration: :class:`GVSLPretrain` (GVSL-MIP).

Shared pieces: :mod:`.pooling` (which features are pooled), :mod:`.projector` (MLP heads),
:mod:`.contrastive` (NT-Xent, InfoNCE with a queue), :mod:`.regression` (BYOL / SimSiam losses),
:mod:`.kmeans`. Each module's docstring states what is simplified.
"""

from .base import GlobalViewsBase
from .byol import BYOL
from .deepcluster import DeepCluster
from .denoising import Denoising
from .gvsl import GVSLPretrain
from .inpainting import Inpainting
from .mocov2 import MoCoV2
from .models_genesis import ModelsGenesis
from .restoration import RestorationPretrain
from .rotation import Rotation
from .simclr import SimCLR
from .simsiam import SimSiam

#: config key → class (experiments/mip/{,phantom/}methods/<key>.yaml)
METHODS = {
    "denoising": Denoising, "inpainting": Inpainting, "models_genesis": ModelsGenesis, "rotation": Rotation,
    "simsiam": SimSiam, "byol": BYOL, "simclr": SimCLR, "mocov2": MoCoV2, "deepcluster": DeepCluster,
    "gvsl_mip": GVSLPretrain,
}



def simplified(key: str) -> str:
    """The "Simplified here" paragraph of method ``key``'s module docstring (a table footnote), one line."""
    import inspect
    import sys

    doc = inspect.getdoc(sys.modules[METHODS[key].__module__]) or ""
    start = doc.find("Simplified here")
    if start < 0:
        return ""
    end = doc.find("\n\n", start)
    return " ".join(doc[start:end if end > 0 else None].split())


__all__ = ["BYOL", "METHODS", "DeepCluster", "Denoising", "GVSLPretrain", "GlobalViewsBase", "Inpainting", "MoCoV2",
           "ModelsGenesis", "RestorationPretrain", "Rotation", "SimCLR", "SimSiam", "simplified"]
