"""Lightning callbacks of gemini-pl."""

from .checkpoint import LastCheckpoint
from .summary import RegistrationSummary

__all__ = ["LastCheckpoint", "RegistrationSummary"]
