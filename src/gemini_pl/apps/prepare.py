"""A new image as the network expects it: the training preprocessing, then the grid of the pair.

:func:`preprocessed` does to an image what the data module's transforms do to a training file
(:func:`~gemini_pl.data.transforms.case_transforms`): onto its model grid (orientation / spacing /
resize, :func:`~gemini_pl.apps.grid.model_grid`; linear, nearest-voxel values beyond the border as
MONAI's ``border`` padding), then the intensity preprocessing
(:class:`~gemini_pl.data.transforms.Intensityd`, the training code). :func:`network_input`
resamples that onto another grid when needed (the moving image of a pair onto the fixed image's
model grid), with the preprocessed background (0) outside it. A centred pad/crop of the training
data (``preprocessing.shape``) is not repeated: the whole image is processed (by sliding windows
of the training patch when it is larger), so nothing of it is cut off.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..data.specs import DatasetSpec
from ..data.transforms import Intensityd
from ..errors import ConfigError
from .grid import Grid, image_array, model_grid, resample, to_image

__all__ = ["device_of", "network_input", "preprocessed"]


def preprocessed(image: sitk.Image, spec: DatasetSpec, source: str = "") -> sitk.Image:
    """``image`` on its own model grid with the training intensity preprocessing (float32)."""
    p = spec.preprocessing
    grid = model_grid(Grid.of(image), p.orientation, p.spacing, p.resize)
    on_grid = resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.sitkLinear, extrapolate=True)
    arr = torch.from_numpy(image_array(on_grid, np.float32))[None]
    arr = Intensityd(spec)({"image": arr, "source": {"image": source}})["image"]
    return to_image(arr[0].numpy().astype(np.float32), grid)


def network_input(image: sitk.Image, spec: DatasetSpec, grid: Grid, device: torch.device | str = "cpu",
                  source: str = "") -> torch.Tensor:
    """``image`` preprocessed (:func:`preprocessed`) and on ``grid``: (1, 1, *grid.shape) float32 on ``device``."""
    on_grid = resample(preprocessed(image, spec, source), grid, sitk.sitkLinear)
    return torch.from_numpy(image_array(on_grid, np.float32))[None, None].to(device)


def device_of(name: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU; otherwise as named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name}: not a device ({exc}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {name}: no such CUDA device on this machine "
                          f"({torch.cuda.device_count()} visible); use --device cpu or auto")
    return device
