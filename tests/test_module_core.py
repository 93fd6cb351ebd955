"""The module core: one base for every method, one checkpoint entry, the guard for every module,
the data contract linked from the data by the CLI."""

from __future__ import annotations

import inspect

import lightning as L
import pytest
import torch

from conftest import SMALL_DEFORMER, SMALL_WIDTHS, poison_gemini_loss
from downstream_data import MemoryDataModule
from gemini_pl import modules
from gemini_pl.cli import cli_main
from gemini_pl.errors import ConfigError
from gemini_pl.modules import GeminiModule, Segmentation
from gemini_pl.modules.baselines import DenseCL
from gemini_pl.modules.core import CHECKPOINT_KEY

METHODS = [getattr(modules, name) for name in modules.__all__ if inspect.isclass(getattr(modules, name))
           and issubclass(getattr(modules, name), L.LightningModule)]


def _trainer(tmp_path, **kw) -> L.Trainer:
    kw.setdefault("max_epochs", 1)
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0, **kw)


def test_every_method_is_a_core_module_with_the_core_training_step():
    assert len(METHODS) >= 12
    for cls in METHODS:
        assert issubclass(cls, GeminiModule), cls
        # methods supply losses through hooks; none re-implements the step (or stashes state in it)
        assert cls.training_step is GeminiModule.training_step, cls
        assert cls.configure_optimizers is GeminiModule.configure_optimizers, cls


def test_one_checkpoint_entry_and_legacy_entries_are_read():
    model = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3)
    torch.rand(5, generator=model.aug_generator)
    ckpt: dict = {}
    model.on_save_checkpoint(ckpt)
    assert list(ckpt) == [CHECKPOINT_KEY]
    expected = torch.rand(5, generator=model.aug_generator)
    for key in (CHECKPOINT_KEY, "gemini_segmentation"):  # today's entry, and the one of older checkpoints
        fresh = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3)
        fresh.on_load_checkpoint({key: ckpt[CHECKPOINT_KEY]})
        assert torch.equal(torch.rand(5, generator=fresh.aug_generator), expected), key


def test_dense_pretraining_checkpoints_and_offsets_its_generator():
    model = DenseCL(spatial_dims=2, widths=SMALL_WIDTHS, aug_seed=3)
    ckpt: dict = {}
    model.on_save_checkpoint(ckpt)
    assert torch.equal(ckpt[CHECKPOINT_KEY]["aug_generator"], torch.Generator().manual_seed(3).get_state())

    class Rank1(DenseCL):
        @property
        def global_rank(self) -> int:
            return 1

    ranked = Rank1(spatial_dims=2, widths=SMALL_WIDTHS, aug_seed=3)
    ranked.setup("fit")
    assert torch.equal(torch.rand(3, generator=ranked.aug_generator),
                       torch.rand(3, generator=torch.Generator().manual_seed(3 + 1000003)))


def test_segmentation_skips_a_nonfinite_step(tmp_path):
    """The guard serves every module: a NaN segmentation loss leaves the weights untouched."""
    model = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=6)
    orig, calls = model.seg_loss, {"n": 0}

    def poisoned(logits, label):
        calls["n"] += 1
        loss = orig(logits, label)
        return loss * float("nan") if calls["n"] == 2 else loss

    model.seg_loss = poisoned
    weights = []

    class Snap(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            weights.append(pl_module.net.head[0].weight.detach().clone())

    trainer = _trainer(tmp_path, limit_train_batches=3, callbacks=[Snap()], log_every_n_steps=1)
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="labeled"))
    assert model.nonfinite_steps == 1
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gemini_skip_counts_per_loss_name(tmp_path):
    from gemini_pl.modules import GeminiPretrain

    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    poison_gemini_loss(model, at_call=1)
    trainer = _trainer(tmp_path, limit_train_batches=2, log_every_n_steps=1)
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"))
    assert model.nonfinite_steps == 1
    assert model.guard.state_dict()["consecutive_nonfinite"] == {"gemini": 0, "restore": 0}


# ------------------------------------------------------------------ the data contract through the CLI
def _cli(tmp_path, phantom_root, *extra: str):
    args = [
        "--model", "gemini_pl.modules.Segmentation", "--model.widths", str(SMALL_WIDTHS),
        "--data", "gemini_pl.data.PhantomDataModule", "--data.root", str(phantom_root), "--data.size", "32",
        "--data.num_unlabeled", "6", "--data.num_labeled", "2", "--data.num_test", "4", "--data.generate", "false",
        "--data.train_mode", "labeled", "--data.eval_mode", "cases", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path), *extra,
    ]
    return cli_main(args, run=False)


def test_cli_links_spatial_dims_num_classes_and_label_kind_from_the_data(tmp_path, phantom_root):
    cli = _cli(tmp_path, phantom_root, "--data.spatial_dims", "2")
    dm, model = cli.datamodule, cli.model
    assert dm.spatial_dims == 2 and dm.num_classes is not None
    # Segmentation's own defaults are 3D and 2 classes: the values come from the data
    assert model.hparams.spatial_dims == 2 and model.net.spatial_dims == 2
    assert model.hparams.num_classes == dm.num_classes != 2
    assert model.hparams.label_kind == dm.label_kind == "multiclass"


def test_cli_refuses_a_model_value_that_contradicts_the_data(tmp_path, phantom_root):
    with pytest.raises(ConfigError, match=r"model.init_args.num_classes=5 but the data gives num_classes="):
        _cli(tmp_path, phantom_root, "--data.spatial_dims", "2", "--model.num_classes", "5")


# ------------------------------------------------------------------ augmentation as published, and rigid
def test_augmentation_is_rigid_on_a_non_square_image():
    """A 2D 16×48 labeled batch is rotated rigidly in voxel units (``augment_space: physical``);
    the normalised-coordinate affine (a shear on this grid) is the ``normalised`` option."""
    from gemini_pl.spatial import apply_affine, random_affine

    image = torch.rand(1, 1, 16, 48)
    label = (image > 0.5).long()
    for space, shape in (("physical", (16, 48)), ("normalised", None)):
        model = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=2, augment_space=space, aug_seed=5)
        out = model.prepare_batch({"image": image, "label": label})
        theta = random_affine(1, 2, scale=(0.75, 1.25), per_axis_scale=False, generator=torch.Generator().manual_seed(5),
                              spatial_shape=shape)
        assert torch.equal(out["image"], apply_affine(image, theta)), space
        assert torch.equal(out["label"], apply_affine(label, theta, mode="nearest")), space


def test_affine_per_sample_and_corruption_before_the_affine():
    from gemini_pl.augment.corruption import corrupt
    from gemini_pl.modules import GeminiPretrain
    from gemini_pl.spatial import apply_affine, random_affine

    x_a, x_b = torch.rand(2, 1, 24, 24), torch.rand(2, 1, 24, 24)
    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER, aug_seed=9,
                           affine_per_sample=True, corrupt_before_affine=True)
    out = model.prepare_batch({"image_a": x_a, "image_b": x_b})
    g = torch.Generator().manual_seed(9)
    corrupted = corrupt(x_a, model.corruption, generator=g)  # drawn first, then one affine per sample
    theta = random_affine(2, 2, generator=g, spatial_shape=(24, 24))
    assert not torch.equal(theta[0], theta[1])
    assert torch.equal(out["corrupted_a"], apply_affine(corrupted, theta))
    assert torch.equal(out["image_a"], apply_affine(x_a, theta))


def test_resume_gives_each_ddp_rank_its_own_stream():
    """Checkpoints of a DDP run hold every rank's generator; each rank resumes its own (rank 1 here)."""

    class Rank1(Segmentation):
        @property
        def global_rank(self) -> int:
            return 1

    streams = [torch.Generator().manual_seed(s) for s in (11, 22)]
    states = [g.get_state() for g in streams]
    expected = torch.rand(4, generator=streams[1])
    model = Rank1(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3)
    model.on_load_checkpoint({CHECKPOINT_KEY: {"aug_generator": states[0], "aug_generators": states}})
    assert torch.equal(torch.rand(4, generator=model.aug_generator), expected)
    # a checkpoint of one process: rank 1 still gets a stream of its own, not rank 0's
    other = Rank1(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=3)
    other.on_load_checkpoint({CHECKPOINT_KEY: {"aug_generator": states[0]}})
    assert not torch.equal(torch.rand(4, generator=other.aug_generator),
                           torch.rand(4, generator=torch.Generator().manual_seed(11)))


def test_a_case_segmenter_refuses_registration_pairs(tmp_path):
    model = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=6)
    trainer = _trainer(tmp_path, limit_train_batches=1)
    with pytest.raises(ConfigError, match="set data.eval_mode: cases"):
        trainer.test(model, datamodule=MemoryDataModule(2, 32, train_mode="labeled", eval_mode="pairs"))


def test_uamt_teacher_starts_from_the_init_from_weights(tmp_path):
    from gemini_pl.modules import UAMT

    source = Segmentation(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=6)
    path = tmp_path / "net.pt"
    torch.save(source.net.state_dict(), path)
    model = UAMT(spatial_dims=2, widths=SMALL_WIDTHS, num_classes=6, init_from=str(path))
    seen = {}

    class Check(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["teacher"] = [p.detach().clone() for p in pl_module.teacher.parameters()]
            seen["student"] = [p.detach().clone() for p in pl_module.net.parameters()]

    trainer = _trainer(tmp_path, limit_train_batches=1, callbacks=[Check()])
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs+labeled"))
    assert all(torch.equal(t, s) for t, s in zip(seen["teacher"], seen["student"]))  # teacher = student
    first = next(iter(source.net.backbone.parameters()))
    assert torch.equal(seen["teacher"][0], first)  # ... and the student is the init_from backbone
