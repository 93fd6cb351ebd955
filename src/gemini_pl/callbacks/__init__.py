"""Lightning callbacks of gemini-pl."""

from .checkpoint import LastCheckpoint
from .summary import RegistrationSummary
from .wandb_resume import WandbResume

__all__ = ["LastCheckpoint", "RegistrationSummary", "WandbResume"]
