"""The deformation-model switches on GEMINI-MIP, GEMINI-Semi and Registration: training logs the
new terms with the values of the loss functions, validation reports folding % and SDlogJ of the
(integrated) fields by default, and invalid settings are one-line config errors."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from conftest import REPO, SMALL_DEFORMER, SMALL_WIDTHS, print_config
from downstream_data import MemoryDataModule
from gemini_pl.errors import ConfigError
from gemini_pl.losses import bending_energy, inverse_consistency, negative_jacobian
from gemini_pl.metrics import folding_percent, sdlogj
from gemini_pl.modules import GeminiPretrain, GeminiSemi, Registration
from gemini_pl.spatial import integrate_velocity

SWITCHES = dict(integration_steps=4, smoother="bending", lambda_inverse=0.5, lambda_jacobian=2.0)


def _trainer(tmp_path, **kw) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2,
    )
    defaults.update(kw)
    return L.Trainer(**defaults)


def _net(dims: int = 2) -> dict:
    return dict(spatial_dims=dims, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)


def _pairs(dims: int = 2, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((2, 1, *(size,) * dims), generator=g), torch.rand((2, 1, *(size,) * dims), generator=g)


def test_defaults_are_the_published_dhl():
    model = GeminiPretrain(**_net())
    hp = model.hparams
    assert (hp.integration_steps, hp.smoother, hp.lambda_inverse, hp.lambda_jacobian) == (0, "gradient", 0.0, 0.0)
    terms = model.gemini_terms(*_pairs())
    assert set(terms) == {"smooth", "gvs", "gss_pos", "gss_align", "gss", "total", "feature_similarity"}


def test_gemini_terms_with_all_switches_equal_the_loss_functions():
    """The logged terms are those of the integrated fields; the total adds the weighted new terms."""
    torch.manual_seed(0)
    model = GeminiPretrain(flow_init="published", **SWITCHES, **_net())
    x_a, x_b = _pairs()
    terms = {k: v.detach() for k, v in model.gemini_terms(x_a, x_b).items()}
    with torch.no_grad():
        f_a, f_b = model.net.features(torch.cat([x_a, x_b])).chunk(2)
        ab, ba = (integrate_velocity(v, 4) for v in model.net.flows_both_ways(f_a, f_b))
    assert float(terms["inverse"]) == pytest.approx(float(inverse_consistency(ab, ba)), rel=1e-4)
    assert float(terms["neg_jacobian"]) == pytest.approx(float(negative_jacobian(ab) + negative_jacobian(ba)), rel=1e-4, abs=1e-7)
    assert float(terms["smooth"]) == pytest.approx(float(bending_energy(ab) + bending_energy(ba)), rel=1e-4)
    assert float(terms["inverse"]) > 0
    w = model.weights
    expected = w.smooth * terms["smooth"] + w.gss * terms["gss"] + w.gvs * terms["gvs"] + 0.5 * terms["inverse"] + 2.0 * terms["neg_jacobian"]
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-5)


def test_pretrain_step_with_all_switches_logs_the_new_terms(tmp_path):
    model = GeminiPretrain(**SWITCHES, **_net())
    trainer = _trainer(tmp_path, limit_val_batches=1)
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"))
    m = trainer.callback_metrics
    for key in ("train/gemini/inverse", "train/gemini/neg_jacobian", "train/gemini/smooth", "train/gemini/total",
                "train/restore/total", "val/folding_percent", "val/sdlogj", "val/reg_dice"):
        assert key in m and math.isfinite(float(m[key])), key
    assert trainer.global_step == 4 and model.nonfinite_steps == 0


def test_semi_step_with_all_switches_logs_the_new_terms(tmp_path):
    model = GeminiSemi(num_classes=6, **SWITCHES, **_net())
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=MemoryDataModule(2, 32))
    m = trainer.callback_metrics
    assert {"train/gemini/inverse", "train/gemini/neg_jacobian", "train/seg/total"} <= set(m)


@pytest.mark.parametrize("cls", [GeminiPretrain, GeminiSemi])
@pytest.mark.parametrize("steps", [0, 3])
def test_validation_logs_folding_and_sdlogj_of_the_fields_by_default(tmp_path, cls, steps):
    """val/folding_percent and val/sdlogj are the means over the validation pairs of the metrics of
    the model's (integrated) field; a random initial deformer (flow_init: published) folds."""
    torch.manual_seed(0)
    kw = dict(num_classes=6) if cls is GeminiSemi else {}
    model = cls(flow_init="published", integration_steps=steps, **kw, **_net())
    dm = MemoryDataModule(2, 32, eval_mode="pairs")
    trainer = _trainer(tmp_path)
    trainer.validate(model, datamodule=dm, verbose=False)
    folds, sds = [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            f_a, f_b = model.net.features(torch.cat([batch["image_a"], batch["image_b"]])).chunk(2)
            flow = integrate_velocity(model.net.flow(f_a, f_b), steps)
            folds.append(folding_percent(flow))
            sds.append(sdlogj(flow))
    m = trainer.callback_metrics
    assert float(m["val/folding_percent"]) == pytest.approx(float(torch.cat(folds).mean()), abs=1e-4)
    assert float(m["val/sdlogj"]) == pytest.approx(float(torch.cat(sds).mean()), rel=1e-4)
    assert "val/reg_dice" in m
    if steps == 0:
        assert float(m["val/folding_percent"]) > 0


def test_integrated_fields_fold_less_than_displacements():
    """The same random deformer read as a velocity (7 squarings) folds less than as a displacement."""
    torch.manual_seed(0)
    model = GeminiPretrain(flow_init="published", **_net())
    x_a, x_b = _pairs(size=32)
    with torch.no_grad():
        out = model.net.flow(*model.net.features(torch.cat([x_a, x_b])).chunk(2))
    assert float(folding_percent(integrate_velocity(out, 7)).mean()) < float(folding_percent(out).mean())


@pytest.mark.parametrize("bad,match", [
    (dict(integration_steps=-1), "integration_steps"),
    (dict(integration_steps=1.5), "integration_steps"),
    (dict(smoother="elastic"), "smoother"),
    (dict(lambda_inverse=-1.0), "lambda_inverse"),
    (dict(lambda_jacobian=float("nan")), "lambda_jacobian"),
])
def test_bad_switches_are_config_errors(bad, match):
    for make in (lambda: GeminiPretrain(**bad, **_net()), lambda: Registration(**bad, **_net())):
        with pytest.raises(ConfigError, match=match):
            make()


def test_registration_switches_add_the_terms():
    torch.manual_seed(0)
    model = Registration(flow_init="published", **SWITCHES, **_net())
    moving, fixed = _pairs()
    terms = {k: v.detach() for k, v in model.pair_loss(moving, fixed).items()}
    with torch.no_grad():
        f_m, f_f = model.net.features(torch.cat([moving, fixed])).chunk(2)
        mf, fm = (integrate_velocity(v, 4) for v in model.net.flows_both_ways(f_m, f_f))
    assert float(terms["inverse"]) == pytest.approx(float(inverse_consistency(mf, fm)), rel=1e-4)
    assert float(terms["smooth"]) == pytest.approx(float(bending_energy(mf) + bending_energy(fm)), rel=1e-4)
    expected = terms["ncc"] + 0.4 * terms["smooth"] + 0.5 * terms["inverse"] + 2.0 * terms["neg_jacobian"]
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ConfigError, match="bidirectional"):
        Registration(lambda_inverse=1.0, bidirectional=False, **_net())


@pytest.mark.parametrize("base", ["demo_mni/pretrain.yaml", "demo_mni/semi.yaml", "demo_mni/reg.yaml"])
def test_homeomorphic_presets_compose_with_full_configs(capsys, base):
    """The fragments in experiments/homeomorphic/ set only their switches on top of a full config."""
    exp = REPO / "experiments"
    cfg = print_config(["--config", str(exp / base), "--config", str(exp / "homeomorphic/homeomorphic.yaml"),
                        "--config", str(exp / "homeomorphic/bending.yaml")], capsys)
    args = cfg["model"]["init_args"]
    assert (args["integration_steps"], args["lambda_inverse"], args["lambda_jacobian"]) == (7, 0.1, 1.0)
    assert (args["smoother"], args["lambda_smooth"]) == ("bending", 1.0)
    assert args["lr"] == 0.001  # the base config's settings stay
    plain = print_config(["--config", str(exp / base)], capsys)["model"]["init_args"]
    assert (plain["integration_steps"], plain["smoother"], plain["lambda_inverse"], plain["lambda_jacobian"]) == (0, "gradient", 0.0, 0.0)


@pytest.mark.parametrize("base", ["demo_mni/pretrain.yaml", "demo_mni/semi.yaml", "demo_mni/reg.yaml"])
def test_pyramid_refine_and_cascade_fragments_compose_with_full_configs(capsys, base):
    exp = REPO / "experiments"
    cfg = print_config(["--config", str(exp / base), "--config", str(exp / "homeomorphic/pyramid.yaml"),
                        "--config", str(exp / "homeomorphic/refine.yaml"), "--config", str(exp / "homeomorphic/cascade.yaml")],
                       capsys)
    args = cfg["model"]["init_args"]
    assert (args["pyramid_levels"], args["refine_steps"], args["refine_lr"], args["refine_grid"], args["refine_sigma"]) == (3, 50, 0.5, 2, 1.0)
    assert args["cascade_passes"] == 2
    assert args["lr"] == 0.001
    plain = print_config(["--config", str(exp / base)], capsys)["model"]["init_args"]
    assert (plain["pyramid_levels"], plain["refine_steps"], plain["cascade_passes"]) == (1, 0, 1)


def test_weak_label_registration_config_states_only_what_differs(capsys):
    exp = REPO / "experiments" / "demo_mni"
    weak = print_config(["--config", str(exp / "reg_weak.yaml")], capsys)
    plain = print_config(["--config", str(exp / "reg.yaml")], capsys)
    assert (weak["model"]["init_args"]["lambda_dice"], weak["data"]["init_args"]["train_mode"]) == (1.0, "pairs+labeled")
    assert (plain["model"]["init_args"]["lambda_dice"], plain["data"]["init_args"]["train_mode"]) == (0.0, "pairs")
    assert weak["model"]["init_args"]["lr"] == plain["model"]["init_args"]["lr"]


def test_training_cascade_fragment_composes_with_the_registration_config(capsys):
    exp = REPO / "experiments"
    cfg = print_config(["--config", str(exp / "demo_mni/reg.yaml"), "--config", str(exp / "homeomorphic/cascade_train.yaml")], capsys)
    args = cfg["model"]["init_args"]
    assert (args["train_cascade_passes"], args["cascade_passes"], args["lr"]) == (2, 1, 0.001)
    plain = print_config(["--config", str(exp / "demo_mni/reg.yaml")], capsys)["model"]["init_args"]
    assert plain["train_cascade_passes"] == 1
