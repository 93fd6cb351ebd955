"""Mixed precision: under bf16 autocast the GEMINI losses stay close to fp32 on the same batch.

Stated tolerance: every term within 3 % (relative) of fp32, the total within 1 %. Warps, masks
and the LNCC box sums run in float32 inside autocast; only the convolutions run in bf16.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import SMALL_WIDTHS
from gemini_pl.modules import GeminiPretrain


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dims, size, device, full_width", [
    (2, 64, "cpu", False), (3, 16, "cpu", False),
    pytest.param(3, 128, "cuda", True, marks=CUDA), pytest.param(2, 512, "cuda", True, marks=CUDA),  # paper scale
])
def test_bf16_losses_match_fp32(dims, size, device, full_width):
    torch.manual_seed(0)
    model = GeminiPretrain(spatial_dims=dims, **({} if full_width else {"widths": SMALL_WIDTHS})).to(device)
    torch.nn.init.normal_(model.net.deformer.flow.weight, std=0.05)  # a non-trivial field
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    x_a = pool(torch.rand(1 if dims == 3 else 2, 1, *([size] * dims), device=device), 3, 1, 1)
    x_b = pool(torch.rand(1 if dims == 3 else 2, 1, *([size] * dims), device=device), 3, 1, 1)
    with torch.no_grad():
        fp32 = model.gemini_terms(x_a, x_b)
        with torch.autocast(device, dtype=torch.bfloat16):
            bf16 = model.gemini_terms(x_a, x_b)
    for key, ref in fp32.items():
        assert bf16[key].dtype == torch.float32, key
        assert float(bf16[key]) == pytest.approx(float(ref), rel=3e-2), key
    assert float(bf16["total"]) == pytest.approx(float(fp32["total"]), rel=1e-2)
    # and bf16 really ran: the backbone features are bf16 under autocast
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        assert model.net.features(x_a).dtype == torch.bfloat16


def test_fp16_losses_match_fp32():
    """16-mixed autocast (float16 convolutions): same tolerance as bf16 — float16 has more mantissa bits."""
    torch.manual_seed(0)
    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS)
    torch.nn.init.normal_(model.net.deformer.flow.weight, std=0.05)
    x_a = F.avg_pool2d(torch.rand(2, 1, 64, 64), 3, 1, 1)
    x_b = F.avg_pool2d(torch.rand(2, 1, 64, 64), 3, 1, 1)
    with torch.no_grad():
        fp32 = model.gemini_terms(x_a, x_b)
        with torch.autocast("cpu", dtype=torch.float16):
            fp16 = model.gemini_terms(x_a, x_b)
            assert model.net.features(x_a).dtype == torch.float16
    for key, ref in fp32.items():
        assert fp16[key].dtype == torch.float32, key
        assert float(fp16[key]) == pytest.approx(float(ref), rel=3e-2), key


def test_16_mixed_with_grad_scaler_skips_a_nonfinite_step(tmp_path):
    """The GradScaler branch of GeminiBase.guarded_step (16-mixed), run on CPU with a CPU GradScaler."""
    import lightning as L
    from lightning.pytorch.plugins import MixedPrecision

    from conftest import SMALL_DEFORMER, poison_gemini_loss
    from downstream_data import MemoryDataModule

    model = GeminiPretrain(spatial_dims=2, widths=SMALL_WIDTHS, deformer_widths=SMALL_DEFORMER)
    poison_gemini_loss(model, at_call=2)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))],
    )
    trainer.fit(model, datamodule=MemoryDataModule(2, 32, train_mode="pairs", eval_mode="pairs"))
    assert model.nonfinite_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the poisoned GEMINI step left no trace in Adam (the scaler skipped it); the other two ran
    assert int(trainer.optimizers[0].state[model.net.deformer.flow.weight]["step"]) == 2
