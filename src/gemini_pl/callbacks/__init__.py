"""Lightning callbacks of gemini-pl."""

from .checkpoint import LastCheckpoint
from .summary import RegistrationSummary
from .wandb_resume import WandbResume

__all__ = ["LastCheckpoint", "RegistrationSummary", "WandbResume"]
from .prediction_writer import NiftiPredictionWriter  # noqa: E402
from .results import ResultsWriter  # noqa: E402

__all__ += ["NiftiPredictionWriter", "ResultsWriter"]
from .wandb_media import WandbMedia  # noqa: E402

__all__ += ["WandbMedia"]
from .speed import ChannelsLast, CompileNetwork  # noqa: E402

__all__ += ["ChannelsLast", "CompileNetwork"]
from .curves import TrainingCurves  # noqa: E402
from .wandb_config import ConfigToLoggers  # noqa: E402

__all__ += ["ConfigToLoggers", "TrainingCurves"]
from .test_pictures import TestPictures  # noqa: E402

__all__ += ["TestPictures"]
