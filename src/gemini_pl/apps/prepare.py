"""A new image as the network expects it: the training intensity preprocessing, then the model's grid.

:func:`network_input` applies the dataset's intensity preprocessing
(:class:`~gemini_pl.data.transforms.Intensityd`, the training code) to the image's own voxels and
resamples the result onto a grid (:func:`~gemini_pl.apps.grid.resample`, linear; zero outside
the image). The intensities are preprocessed before resampling, so that an image already on the
model's grid gets exactly the input the data module would serve, and the zero padding of a
resampled one is the preprocessed background.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..data.specs import DatasetSpec
from ..data.transforms import Intensityd
from .grid import Grid, image_array, resample, to_image

__all__ = ["device_of", "network_input"]


def network_input(image: sitk.Image, spec: DatasetSpec, grid: Grid, device: torch.device | str = "cpu",
                  source: str = "") -> torch.Tensor:
    """``image`` preprocessed and on ``grid``: (1, 1, *grid.shape) float32 on ``device``."""
    arr = torch.from_numpy(image_array(image, np.float32))[None]
    arr = Intensityd(spec)({"image": arr, "source": {"image": source}})["image"]
    on_grid = resample(to_image(arr[0].numpy().astype(np.float32), Grid.of(image)), grid, sitk.sitkLinear)
    return torch.from_numpy(image_array(on_grid, np.float32))[None, None].to(device)


def device_of(name: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU; otherwise as named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
