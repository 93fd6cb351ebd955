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


@pytest.mark.parametrize("dims, size, device, full_width, dtype", [
    (2, 64, "cpu", False, torch.bfloat16), (3, 16, "cpu", False, torch.bfloat16),
    (2, 64, "cpu", False, torch.float16),  # 16-mixed: float16 has more mantissa bits than bf16
    pytest.param(3, 128, "cuda", True, torch.bfloat16, marks=CUDA),  # paper scale
    pytest.param(2, 512, "cuda", True, torch.bfloat16, marks=CUDA),
])
def test_mixed_precision_losses_match_fp32(dims, size, device, full_width, dtype):
    torch.manual_seed(0)
    model = GeminiPretrain(spatial_dims=dims, **({} if full_width else {"widths": SMALL_WIDTHS})).to(device)
    torch.nn.init.normal_(model.net.deformer.flow.weight, std=0.05)  # a non-trivial field
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    x_a = pool(torch.rand(1 if dims == 3 else 2, 1, *([size] * dims), device=device), 3, 1, 1)
    x_b = pool(torch.rand(1 if dims == 3 else 2, 1, *([size] * dims), device=device), 3, 1, 1)
    with torch.no_grad():
        fp32 = model.gemini_terms(x_a, x_b)
        with torch.autocast(device, dtype=dtype):
            mixed = model.gemini_terms(x_a, x_b)
    for key, ref in fp32.items():
        assert mixed[key].dtype == torch.float32, key
        assert float(mixed[key]) == pytest.approx(float(ref), rel=3e-2), key
    assert float(mixed["total"]) == pytest.approx(float(fp32["total"]), rel=1e-2)
    # and the low precision really ran: every convolution's output has its dtype under autocast
    # (normalisation layers run in fp32 on CUDA, so the features themselves may be fp32 there)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
             for m in model.net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    with torch.no_grad(), torch.autocast(device, dtype=dtype):
        model.net.features(x_a)
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {dtype}, set(seen)


def test_16_mixed_with_grad_scaler_skips_a_nonfinite_step(tmp_path):
    """The GradScaler branch of the guarded step (NonFiniteGuard.step) (16-mixed), run on CPU with a CPU GradScaler."""
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
