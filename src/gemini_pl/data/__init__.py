"""Data: the phantom generator, image I/O and the Lightning data modules."""

from gemini_pl.data.datamodule import GeminiDataModule, PhantomDataModule
from gemini_pl.data.phantom import generate_phantom_dataset, make_phantom

__all__ = ["GeminiDataModule", "PhantomDataModule", "generate_phantom_dataset", "make_phantom"]
