"""The two steps of a GEMINI iteration: their share of the backbone update, the cosine between
their updates, separate optimiser states, the head-loss balance, and the feature-collapse watch."""

from __future__ import annotations

import logging
import math

import lightning as L
import pytest
import torch

from conftest import REPO, SMALL_DEFORMER, SMALL_WIDTHS, print_config
from downstream_data import MemoryDataModule
from gemini_pl.errors import ConfigError
from gemini_pl.modules import GeminiPretrain
from gemini_pl.modules.diagnostics import CollapseWatch, LossInfluence, adam_update


# ------------------------------------------------------------------ hand-computed on a tiny model
def test_grad_share_and_update_cosine_by_hand():
    """Backbone w (2 values), head h (1 value); Adam(lr 0.1). Iteration 1 only steps the head loss
    (g_head = (3, -4)): Adam's first update is −lr·g/(|g| + ε) per entry = (−0.1, +0.1). Iteration 2
    measures: g_gemini = (0, 2) has norm 2, g_head = (6, 8) norm 10 → share 2 / 12. The GEMINI step
    (second Adam step, m = 0.1·g₂ + 0.09·g₁, v = 0.001·g₂² + 0.000999·g₁²) moves w by
    −lr·m̂/(√v̂ + ε); its cosine with the preceding head update (−0.1, 0.1) is computed here from
    these formulas."""
    w = torch.nn.Parameter(torch.zeros(2))
    h = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([w, h], lr=0.1)
    probe = LossInfluence("gemini", "head")

    w.grad, h.grad = torch.tensor([3.0, -4.0]), torch.tensor([1.0])
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([-0.1, 0.1]), atol=1e-6)
    prev = adam_update(opt, [w])[0]
    assert torch.allclose(prev, torch.tensor([-0.1, 0.1]), atol=1e-6)

    w.grad, h.grad = torch.tensor([0.0, 2.0]), None
    probe.after_backward("gemini", [w], [w, h], opt, measure=True)
    before = w.detach().clone()
    opt.step()
    w.grad, h.grad = torch.tensor([6.0, 8.0]), torch.tensor([1.0])
    probe.after_backward("head", [w], [w, h], opt, measure=True)
    logs = probe.pop_logs()
    assert logs["train/gemini/grad_share"].item() == pytest.approx(2 / 12, rel=1e-6)

    g1, g2 = torch.tensor([3.0, -4.0], dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64)
    m = 0.1 * g2 + 0.9 * 0.1 * g1
    v = 0.001 * g2 ** 2 + 0.999 * 0.001 * g1 ** 2
    update = -0.1 * (m / (1 - 0.9 ** 2)) / ((v / (1 - 0.999 ** 2)).sqrt() + 1e-8)
    assert torch.allclose((w.detach() - before).double(), update, atol=1e-6)
    head_prev = torch.tensor([-0.1, 0.1], dtype=torch.float64)
    cosine = float(update @ head_prev / (update.norm() * head_prev.norm()))
    assert logs["train/gemini/update_cosine"].item() == pytest.approx(cosine, abs=1e-5)
    assert 0.5 < cosine < 1.0  # the shared moments pull the GEMINI step towards the head's direction


def test_balance_scales_the_head_gradients_to_the_set_ratio():
    """r = 3, ‖g_gemini‖ = 5, ‖g_head‖ on the backbone = 10 → every head gradient × 1.5, the head's
    backbone norm becomes 15 = 3 · 5 and the share reads 1 / (1 + 3)."""
    w, h = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([w, h], lr=0.1)
    probe = LossInfluence("gemini", "restore", balance=3.0)
    w.grad = torch.tensor([3.0, 4.0])
    probe.after_backward("gemini", [w], [w, h], opt, measure=True)
    w.grad, h.grad = torch.tensor([6.0, 8.0]), torch.tensor([2.0])
    probe.after_backward("restore", [w], [w, h], opt, measure=True)
    assert torch.allclose(w.grad, torch.tensor([9.0, 12.0])) and torch.allclose(h.grad, torch.tensor([3.0]))
    logs = probe.pop_logs()
    assert logs["train/restore/balance_scale"].item() == pytest.approx(1.5)
    assert logs["train/gemini/grad_share"].item() == pytest.approx(0.25)
    # unmeasured iterations are balanced too, and log nothing
    w.grad = torch.tensor([0.0, 1.0])
    probe.after_backward("gemini", [w], [w, h], opt, measure=False)
    w.grad, h.grad = torch.tensor([0.0, 4.0]), torch.tensor([1.0])
    probe.after_backward("restore", [w], [w, h], opt, measure=False)
    assert torch.allclose(w.grad, torch.tensor([0.0, 3.0])) and probe.pop_logs() == {}


# ------------------------------------------------------------------ in a training run
def _fit(tmp_path, batches=4, every=2, **kwargs) -> tuple[GeminiPretrain, L.Trainer]:
    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, **kwargs)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=batches, limit_val_batches=0,
                        logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=every,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"))
    return model, trainer


def _rows(trainer, key):
    import csv

    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def test_published_recipe_logs_share_and_cosine_at_the_logging_cadence(tmp_path):
    model, trainer = _fit(tmp_path)
    shares, cosines = _rows(trainer, "train/gemini/grad_share"), _rows(trainer, "train/gemini/update_cosine")
    assert len(shares) == 2 and len(cosines) == 2  # logging steps 2 and 4
    assert all(0 < s < 1 for s in shares) and all(-1 <= c <= 1 for c in cosines)
    assert not isinstance(model.optimizers(), list)  # the paper's single shared Adam


def test_balance_in_a_run_gives_the_set_share(tmp_path):
    _, trainer = _fit(tmp_path, head_balance=1.0)
    assert _rows(trainer, "train/gemini/grad_share") == pytest.approx([0.5, 0.5], abs=1e-5)
    assert all(s > 0 for s in _rows(trainer, "train/restore/balance_scale"))


def test_per_loss_optimiser_states_keep_two_adams(tmp_path):
    model, _ = _fit(tmp_path, optimizer_states="per_loss")
    gemini, head = (o.optimizer for o in model.optimizers())
    deformer = next(model.net.deformer.parameters())
    head_param = next(model.net.head.parameters())
    backbone = next(model.net.backbone.parameters())
    # each Adam only holds the parameters its loss reached, and stepped once per iteration
    assert deformer in gemini.state and deformer not in head.state
    assert head_param in head.state and head_param not in gemini.state
    assert int(gemini.state[backbone]["step"]) == int(head.state[backbone]["step"]) == 4
    assert not torch.allclose(gemini.state[backbone]["exp_avg"], head.state[backbone]["exp_avg"])
    shared, _ = _fit(tmp_path / "shared")
    assert int(shared.optimizers().optimizer.state[next(shared.net.backbone.parameters())]["step"]) == 8


def test_options_refuse_the_joint_schedule():
    for kw in ({"optimizer_states": "per_loss"}, {"head_balance": 2.0}):
        with pytest.raises(ConfigError, match="schedule: alternate"):
            GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, schedule="joint", **kw)
    with pytest.raises(ConfigError, match="head_balance"):
        GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, head_balance=0.0)


@pytest.mark.parametrize("fragment,expected", [("per_loss", ("per_loss", None)), ("balance_1", ("shared", 1.0)),
                                               ("restoration_only", ("shared", None))])
def test_balance_fragments_select_the_options(capsys, fragment, expected):
    exp = REPO / "experiments"
    args = print_config(["--config", str(exp / "gemini_pretrain.yaml"), "--config", str(exp / "mip/balance" / f"{fragment}.yaml")],
                        capsys)["model"]["init_args"]
    assert (args["optimizer_states"], args["head_balance"]) == expected
    if fragment == "restoration_only":
        assert args["lambda_gss"] == args["lambda_gvs"] == args["lambda_smooth"] == 0.0


# ------------------------------------------------------------------ collapse watch
def test_collapse_watch_counts_consecutive_points(caplog):
    watch = CollapseWatch(threshold=0.9, patience=3)
    with caplog.at_level(logging.WARNING, logger="gemini_pl.modules.diagnostics"):
        fired = [watch.update(v, step) for step, v in enumerate([0.95, 0.96, 0.5, 0.95, 0.97, 0.99, 0.99, 0.99])]
    assert fired == [False, False, False, False, False, True, False, False]
    assert watch.warned_at == 5 and len([r for r in caplog.records if "feature collapse" in r.message]) == 1
    assert not CollapseWatch(threshold=None).update(1.0, 0)


class _Identical(GeminiPretrain):
    """A backbone whose features are identical across pixels (each image's mean feature everywhere)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        features = self.net.features

        def same_everywhere(x):
            f = features(x)
            return f.mean((2, 3), keepdim=True).expand_as(f)

        self.net.features = same_everywhere


class _Varied(GeminiPretrain):
    """A backbone whose features vary across pixels: a fixed zero-mean random field added."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        features = self.net.features
        noise = torch.randn(1, 8, 32, 32, generator=torch.Generator().manual_seed(0))
        noise = 10 * (noise - noise.mean((2, 3), keepdim=True))

        def varied(x):
            return features(x) + noise

        self.net.features = varied


@pytest.mark.parametrize("identical", [True, False])
def test_collapsed_features_warn_exactly_once(tmp_path, caplog, identical):
    cls = _Identical if identical else _Varied
    model = cls(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, collapse_patience=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=8, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1, default_root_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="gemini_pl.modules.diagnostics"):
        trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs", iterations=8))
    warnings = [r for r in caplog.records if "feature collapse" in r.message]
    assert len(warnings) == (1 if identical else 0)
    assert (model.collapse.warned_at is not None) == identical
    if identical:
        assert model.collapse.run == 8 and model.collapse.warned_at == 4  # 2nd logging point: global step 2·2
    else:
        assert model.collapse.run == 0
