"""DDP evaluation: two CPU processes (gloo) log the same test metrics as one process.

Lightning's default evaluation ``DistributedSampler`` pads the test set so that every process gets
as many items as the others; with an odd number of cases one case was then evaluated twice and
counted twice in the synchronised means. The data module now splits the evaluation items over the
processes without repeats (``gemini_pl.data.sampling.eval_sampler``); every module logs metric
objects synchronised once per epoch. These tests run ``gemini-pl test`` on 5 phantom cases (or
pairs) with 1 and with 2 processes and compare every logged ``test/...`` value (the CSV logger's
``metrics.csv``): Segmentation (a tiny checkpoint), Registration, and GeminiPretrain's pair
evaluation (``RegistrationEvaluation.reg_eval_step``).

Also: the training stream sampler is not split a second time by Lightning, and the multi-GPU
preset ``experiments/trainer/ddp.yaml`` parses.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from test_cli import run_cli

needs_dist = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

NUM_TEST = 5  # odd: a padded 2-process split would evaluate one case twice
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


def _tiny_checkpoint(config: Path, data_args: list[str], cwd: Path) -> Path:
    """``last.ckpt`` of a one-iteration ``gemini-pl fit`` of the config (no validation)."""
    cwd.mkdir()
    res = run_cli(["fit", "--config", str(config), *data_args, "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0"], cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    (ckpt,) = cwd.glob("runs/**/last.ckpt")
    return ckpt


def _logged_test_metrics(run: Path) -> dict[str, float]:
    """The ``test/...`` values of the (only) ``metrics.csv`` written under ``run``."""
    files = sorted(run.glob("runs/**/metrics.csv"))
    assert len(files) == 1, files
    out: dict[str, float] = {}
    for row in csv.DictReader(open(files[0])):
        out.update({k: float(v) for k, v in row.items() if k.startswith("test/") and v not in ("", None)})
    assert out, f"no test metrics in {files[0]}"
    return out


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def _compare_1_vs_2_processes(tmp_path: Path, config_rel: str, data: dict, expected: set[str], fit: bool) -> dict:
    """``gemini-pl test`` with 1 and 2 processes; asserts equal ``test/...`` values, returns the 2-process ones.

    ``fit``: test the ``last.ckpt`` of a one-iteration fit; otherwise the model as the config builds
    it (``seed_everything`` makes its weights the same in every process and run).
    """
    config = REPO / config_rel
    data = {"root": str(tmp_path / "data"), "size": 32, "num_test": NUM_TEST, **data}
    data_args = [f"--data.init_args.{k}={v}" for k, v in data.items()]
    args = ["test", "--config", str(config), *data_args]
    if fit:
        args += ["--ckpt_path", str(_tiny_checkpoint(config, data_args, tmp_path / "fit"))]
    logged = {}
    for procs, more in ((1, []), (2, DDP)):
        run = tmp_path / f"procs{procs}"
        run.mkdir()
        res = run_cli([*args, *more], cwd=run)
        assert res.returncode == 0, res.stderr[-3000:]
        if procs == 2:
            assert "MEMBER: 2/2" in res.stdout + res.stderr
        logged[procs] = _logged_test_metrics(run)
    one, two = logged[1], logged[2]
    print(f"{config_rel}: 1 process {one}; 2 processes {two}")
    assert expected <= set(one), one
    assert set(one) == set(two), (one, two)
    diff = {k: (one[k], two[k]) for k in one if not _same(one[k], two[k])}
    assert not diff, f"1 vs 2 processes differ: {diff}"
    return two


def _check_per_case_table(table: Path, logged: dict[str, float]) -> None:
    """Each case once in the per-case CSV, and the logged means are the means of its columns."""
    rows = list(csv.DictReader(open(table)))
    assert sorted(r["case"] for r in rows) == sorted({r["case"] for r in rows}) and len(rows) == NUM_TEST
    checked = 0
    for column in rows[0]:
        names = {"folding": ["test/folding_percent"], "dice": ["test/seg_dice", "test/reg_dice"],
                 "dice_unwarped": ["test/reg_dice_unwarped"], "hd95": ["test/hd95", "test/reg_hd95"]}.get(column, [f"test/{column}"])
        key = next((k for k in names if k in logged), None)
        if key is None:
            continue
        values = [float(r[column]) for r in rows if r[column] != "nan"]
        scale = 100.0 if column.startswith("dice") else 1.0  # the table's Dice is in %
        if values:
            assert math.isclose(sum(values) / len(values) / scale, logged[key], abs_tol=1e-4), column
            checked += 1
    assert checked >= 2, (rows[0], logged)


@needs_dist
def test_ddp_segmentation_test_metrics_equal_single_process(tmp_path):
    """Segmentation checkpoint, 5 whole cases: Dice/AVD/HD95 metric objects (torchmetrics "cat" states)."""
    two = _compare_1_vs_2_processes(
        tmp_path, "experiments/demo/seg.yaml", {"num_unlabeled": 2, "samples_per_epoch": 4},
        {"test/seg_dice", "test/avd", "test/hd95"}, fit=True,
    )
    _check_per_case_table(tmp_path / "procs2" / "runs/demo/seg/results/test_cases.csv", two)


@needs_dist
def test_ddp_registration_test_metrics_equal_single_process(tmp_path):
    """Registration, 5 held-out pairs: Dice/HD95/folding/SDlogJ metric objects."""
    two = _compare_1_vs_2_processes(
        tmp_path, "experiments/demo/reg.yaml", {"num_unlabeled": 2, "num_val_pairs": NUM_TEST},
        {"test/reg_dice", "test/reg_dice_unwarped", "test/folding_percent"}, fit=False,
    )
    _check_per_case_table(tmp_path / "procs2" / "runs/demo/reg/results/test_cases.csv", two)


@needs_dist
def test_ddp_pretrain_pair_metrics_equal_single_process(tmp_path):
    """GEMINI pre-training, 5 held-out pairs: Dice/folding as MeanMetric objects."""
    _compare_1_vs_2_processes(
        tmp_path, "experiments/demo/pretrain.yaml", {"num_unlabeled": 2, "num_val_pairs": NUM_TEST},
        {"test/reg_dice", "test/reg_dice_unwarped", "test/folding_percent"}, fit=False,
    )


def test_stream_sampler_is_not_split_again_by_lightning():
    """Lightning wraps any non-DistributedSampler in a second distributed split (use_distributed_sampler)."""
    from torch.utils.data import DistributedSampler

    from gemini_pl.data.sampling import StreamSampler, eval_sampler

    s = StreamSampler(10, 2, num_replicas=2, rank=1)
    assert isinstance(s, DistributedSampler)
    assert len(s) == 5 and list(s) == [1, 3, 5, 7, 9]
    s.set_epoch(3)  # Lightning calls it every epoch: no effect on the stream
    assert list(s) == [1, 3, 5, 7, 9]
    assert eval_sampler(list(range(5))) is None  # not distributed: Lightning's default applies


def test_ddp_preset_parses(tmp_path):
    res = run_cli(
        ["fit", "--config", str(REPO / "experiments" / "demo_pretrain.yaml"),
         "--config", str(REPO / "experiments" / "trainer" / "ddp.yaml"),
         "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.precision", "32", "--print_config"],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    trainer = yaml.safe_load(res.stdout)["trainer"]
    assert trainer["strategy"] == "ddp" and trainer["accelerator"] == "cpu" and str(trainer["devices"]) == "2"
    assert trainer["use_distributed_sampler"] is True and trainer["sync_batchnorm"] is False
    preset = yaml.safe_load((REPO / "experiments" / "trainer" / "ddp.yaml").read_text())["trainer"]
    assert preset["accelerator"] == "gpu" and preset["devices"] == -1 and preset["precision"] == "bf16-mixed"
