"""Lightning callbacks of gemini-pl."""

from .summary import RegistrationSummary

__all__ = ["RegistrationSummary"]
