"""Data: dataset specs, splits, image I/O, the phantom generator and the Lightning data modules.

Where things live: :mod:`gemini_pl.data.specs` (one spec per dataset: label tables,
preprocessing), :mod:`gemini_pl.data.layout` (finding files), :mod:`gemini_pl.data.transforms`
(loading and checking), :mod:`gemini_pl.data.pairs` (pair / labeled / case datasets),
:mod:`gemini_pl.data.splits` (versioned split files), :mod:`gemini_pl.data.records` (the records
of each role under the split), :mod:`gemini_pl.data.cache` (reading and caching items),
:mod:`gemini_pl.data.sampling` (training order, loaders), :mod:`gemini_pl.data.datamodule`
(:class:`GeminiDataModule`, :class:`PhantomDataModule`), :mod:`gemini_pl.data.contract` (what
LightningModules read from it), :mod:`gemini_pl.data.phantom_options` (its ``phantom`` option),
:mod:`gemini_pl.data.check` (``gemini-pl check-data``).
"""

from gemini_pl.data.datamodule import GeminiDataModule, PhantomDataModule
from gemini_pl.data.io import save_prediction
from gemini_pl.data.phantom import generate_phantom_dataset, make_phantom
from gemini_pl.data.phantom_options import PhantomOptions
from gemini_pl.data.specs import SPECS, DatasetSpec, Preprocessing, get_spec
from gemini_pl.data.splits import load_split, make_split, write_split

__all__ = [
    "SPECS",
    "DatasetSpec",
    "GeminiDataModule",
    "PhantomDataModule",
    "PhantomOptions",
    "Preprocessing",
    "generate_phantom_dataset",
    "get_spec",
    "load_split",
    "make_phantom",
    "make_split",
    "save_prediction",
    "write_split",
]
