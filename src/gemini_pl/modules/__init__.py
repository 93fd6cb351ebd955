"""LightningModules: one core (:class:`GeminiModule`, ``core.py``) and one small file per method.

``core.py`` the base (network, optimiser, augmentation generator, guarded step, term logging, data
contract); ``seg_eval.py`` / ``reg_eval.py`` the one segmentation and the one registration
evaluation path; ``gemini.py`` GEMINI's DHL + GSS step; ``pretrain.py`` GEMINI-MIP; ``semi.py``
GEMINI-Semi; ``segment.py`` / ``register.py`` the transfer modules; ``baselines/`` the other
methods of Table II; ``mip/`` the pre-training rows of Tables III/VI (``gemini_pl.modules.mip.<Class>``).
"""

from . import baselines, mip
from .baselines import CPS, UAMT, DeepAtlas, DenseCL, GeminiSemiPosSchedule, PixPro, VADeR, VMAtlas
from .core import GeminiModule
from .demons import ClassicalRegistration, DemonsRegistration
from .gemini import GeminiBase
from .pretrain import GeminiPretrain
from .register import Registration
from .segment import Segmentation
from .semi import GeminiSemi
from .transfer import TransferReport, load_pretrained

__all__ = [
    "CPS", "ClassicalRegistration", "DeepAtlas", "DemonsRegistration", "DenseCL", "GeminiBase", "GeminiModule", "GeminiPretrain", "GeminiSemi", "GeminiSemiPosSchedule",
    "PixPro", "Registration", "Segmentation", "TransferReport", "UAMT", "VADeR", "VMAtlas", "baselines", "load_pretrained", "mip",
]
