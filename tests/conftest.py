"""Shared fixtures: a tiny phantom dataset on disk and small-network settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

SMALL_WIDTHS = [8, 16, 32, 64, 128, 64, 32, 16, 8]
SMALL_DEFORMER = [8, 16, 16, 16, 8]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A session-wide data root holding small 2D (32²) and 3D (16³) phantom datasets."""
    from gemini_pl.data import generate_phantom_dataset

    root = tmp_path_factory.mktemp("data")
    generate_phantom_dataset(root, name="phantom2d", spatial_dims=2, size=32, num_unlabeled=6, num_labeled=2, num_test=4, seed=0)
    generate_phantom_dataset(root, name="phantom3d", spatial_dims=3, size=16, num_unlabeled=4, num_labeled=2, num_test=3, seed=0)
    return root


def poison_gemini_loss(model, at_call: int = 2) -> None:
    """Make the ``at_call``-th GEMINI loss of ``model`` (a GeminiBase) NaN, the others untouched."""
    orig, calls = model.gemini_terms, {"n": 0}

    def poisoned(x_a, x_b):
        terms = orig(x_a, x_b)
        calls["n"] += 1
        if calls["n"] == at_call:
            terms["total"] = terms["total"] * float("nan")
        return terms

    model.gemini_terms = poisoned


def print_config(args: list[str], capsys) -> dict:
    """The config ``gemini-pl fit <args>`` resolves to (``--print_config``), as a dict."""
    import yaml

    from gemini_pl.cli import cli_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", *args, "--print_config"])
    out = capsys.readouterr()
    assert exc.value.code in (0, None), out.err[-3000:]
    return yaml.safe_load(out.out)
