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


@pytest.mark.parametrize("dims, size", [(2, 64), (3, 24)])
def test_bf16_losses_match_fp32(dims, size):
    torch.manual_seed(0)
    model = GeminiPretrain(spatial_dims=dims, widths=SMALL_WIDTHS)
    torch.nn.init.normal_(model.net.deformer.flow.weight, std=0.05)  # a non-trivial field
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    x_a = pool(torch.rand(2, 1, *([size] * dims)), 3, 1, 1)
    x_b = pool(torch.rand(2, 1, *([size] * dims)), 3, 1, 1)
    with torch.no_grad():
        fp32 = model.gemini_terms(x_a, x_b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.gemini_terms(x_a, x_b)
    for key, ref in fp32.items():
        assert bf16[key].dtype == torch.float32, key
        assert float(bf16[key]) == pytest.approx(float(ref), rel=3e-2), key
    assert float(bf16["total"]) == pytest.approx(float(fp32["total"]), rel=1e-2)
    # and bf16 really ran: the backbone features are bf16 under autocast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.net.features(x_a).dtype == torch.bfloat16
