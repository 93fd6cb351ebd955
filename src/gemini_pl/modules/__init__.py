"""LightningModules: what one training/validation step does for each method."""

from .base import GeminiBase
from .pretrain import GeminiPretrain

__all__ = ["GeminiBase", "GeminiPretrain"]
from .register import Registration  # noqa: E402
from .segment import Segmentation  # noqa: E402
from .semi import GeminiSemi  # noqa: E402
from .transfer import TransferReport, load_pretrained  # noqa: E402

__all__ += ["GeminiSemi", "Registration", "Segmentation", "TransferReport", "load_pretrained"]
from . import baselines  # noqa: E402
from .baselines import CPS, UAMT, DeepAtlas, DenseCL, GeminiSemiPosSchedule, PixPro, VADeR, VMAtlas  # noqa: E402

__all__ += ["CPS", "DeepAtlas", "DenseCL", "GeminiSemiPosSchedule", "PixPro", "UAMT", "VADeR", "VMAtlas", "baselines"]
