"""Estimate the GPU hours of the paper-scale Table II matrix: ``python -m gemini_pl.reproduce.cost``.

There is no GPU measurement behind it. How it is derived:

1. FLOPs of one backbone forward pass (paper widths) and of one deformer pass are **counted** with
   ``torch.utils.flop_counter.FlopCounterMode`` on a small input (3D 32³, 2D 64²) and scaled
   linearly with the number of voxels to the paper's image sizes (convolutions are linear in it;
   assumed sizes: 3D 160×160×128 — GVSL's brain crop, used for the cardiac CT too — and 2D 512²).
2. Per method, the network passes of one training iteration are listed (backward ≈ 2 × forward),
   e.g. UA-MT: student on the labeled and two unlabeled images (3 × 3F) + teacher (1 + T = 9 passes
   on 2 images); see ``PASSES``.
3. Iterations: 200 epochs × 200 (4·10⁴) per run, plus as many again for the DCRL pre-trainings.
4. GPU time = FLOPs / sustained throughput. The throughput is an **assumption** (default 20 TFLOP/s:
   a typical fraction of an A100/H100's dense TF32/bf16 peak for 3D convolutions with GroupNorm at
   batch 1, which are partly memory-bound); a CPU step is timed too and reported so the estimate
   can be re-scaled once a real GPU step time is measured (``make bench`` on the GPU).
"""

from __future__ import annotations

import argparse
import time

import torch

from ..nets import GeminiNet

__all__ = ["count_flops", "estimate", "PASSES"]

#: per method: (backbone fwd+bwd image passes, backbone forward-only passes, deformer fwd+bwd passes)
#: for one iteration at batch b (3D b = 1, 2D b = 2); "pre" rows add their pre-training iteration.
PASSES = {
    "U-Net Five": (1, 0, 0),
    "U-Net Full": (1, 0, 0),
    "GEMINI-Semi": (3, 0, 2),        # pair (2 images) + labeled image; deformer both directions
    "UA-MT": (3, 18, 0),             # student: labeled + 2 unlabeled; teacher: 9 passes × 2 unlabeled
    "CPS": (6, 0, 0),                # two nets × (labeled + 2 unlabeled)
    "DeepAtlas": (6, 0, 2),          # seg of L and B, features of A, B, L, B; two registrations
    "VoxelMorph (VM)": (2, 0, 2),
    "LC-VM": (4, 0, 4),              # an unlabeled and a labeled pair (batch 2), both directions
    "LT-Net": (3, 0, 2),             # atlas, target, warped atlas; forward + backward correspondence
    "DataAug": (7, 0, 4),            # atlas ×2 + 2 targets both ways, appearance U-Net, seg of atlas + synthesised
    "DeepRS": (5, 3, 1),             # registration (+ its no-grad pass for the discriminator), seg of 3 images
    "PC-Reg-RT": (6, 1, 2),          # region images of L and U both ways, seg prediction of U, 4 taught seg passes
    "BRBS": (6, 5, 2),               # pair both ways, no-grad registrations for S3P, 4 seg passes (S3P + mix)
    "VADeR": (1 + 2, 2, 0),          # fine-tune + pre-training: query encoder on view 1 of 2 images,
    "DenseCL": (1 + 2, 2, 0),        #   momentum key encoder (forward only) on their view 2
    "PixPro": (1 + 4, 4, 0),         # both views through the online and the momentum encoder
    "MASSL": (3, 0, 0),              # labeled image (segmentation step) + 2 unlabeled (reconstruction step)
    "DPA-DBN": (1 + 2, 1, 0),        # fine-tune + frozen-prior forward; pre-training: the AE (counted as a backbone) on 2 images
    "SetSim": (1 + 2, 2, 0),         # as DenseCL
    "DSC-PM": (1 + 2, 2, 0),         # as DenseCL (the prototype term adds no network pass)
    "GLCL": (1 + 2, 0, 0),           # fine-tune + 2 views of 2 images per step, each stage training half the U-Net (encoder or decoder)
    "ablation (GEMINI-Semi, T1 only) x4": (3, 0, 2),
}
TASK_SHAPES = {"T1": (160, 160, 128), "T2": (160, 160, 128), "T3": (512, 512)}
TASK_BATCH = {"T1": 1, "T2": 1, "T3": 2}


def count_flops(spatial_dims: int, size: int) -> tuple[float, float, float]:
    """(backbone forward FLOPs, deformer forward FLOPs, CPU seconds of one backbone fwd+bwd) at size^dims."""
    from torch.utils.flop_counter import FlopCounterMode

    net = GeminiNet(spatial_dims, 1, 2)
    x = torch.rand(1, 1, *([size] * spatial_dims))
    with FlopCounterMode(display=False) as fc:
        f = net.features(x)
    bb = float(fc.get_total_flops())
    with FlopCounterMode(display=False) as fc:
        net.flow(f, f)
    de = float(fc.get_total_flops())
    t0 = time.perf_counter()
    net.features(x).sum().backward()
    return bb, de, time.perf_counter() - t0


def estimate(tflops: float = 20.0, seeds: int = 3, iterations: int = 40_000) -> str:
    per_voxel = {}
    for dims, size in ((3, 32), (2, 64)):
        bb, de, cpu = count_flops(dims, size)
        per_voxel[dims] = (bb / size**dims, de / size**dims, cpu, bb)
    total_h = 0.0
    lines = [f"| row | T1 h | T2 h | T3 h | all tasks × {seeds} seeds (h) |", "|---|---|---|---|---|"]
    for name, (fb, fo, dfb) in PASSES.items():
        hours = []
        for task, shape in TASK_SHAPES.items():
            if name == "U-Net Full" and task == "T1" or name.startswith("ablation") and task != "T1":
                hours.append(0.0)
                continue
            dims = len(shape)
            vox = 1
            for s in shape:
                vox *= s
            b = TASK_BATCH[task]
            pv_bb, pv_de, _, _ = per_voxel[dims]
            flops = b * vox * (3 * fb * pv_bb + fo * pv_bb + 3 * dfb * pv_de)
            hours.append(flops * iterations / (tflops * 1e12) / 3600)
        mult = 4 if name.startswith("ablation") else 1
        row_total = sum(hours) * seeds * mult
        total_h += row_total
        lines.append(f"| {name} | {hours[0]:.1f} | {hours[1]:.1f} | {hours[2]:.1f} | {row_total:.0f} |")
    cpu3 = per_voxel[3]
    head = [
        f"Counted: backbone forward {per_voxel[3][0] * 160 * 160 * 128 / 1e9:.0f} GFLOPs per 160×160×128 volume, "
        f"{per_voxel[2][0] * 512 * 512 / 1e9:.1f} GFLOPs per 512² image (paper widths); "
        f"CPU: one 32³ backbone forward+backward took {cpu3[2]:.2f} s here ({3 * cpu3[3] / cpu3[2] / 1e9:.1f} GFLOP/s).",
        f"Assumed sustained GPU throughput {tflops:g} TFLOP/s; {iterations} iterations per run (DCRL rows: + the same for pre-training).",
        "",
    ]
    return "\n".join(head + lines + ["", f"Total ≈ {total_h:.0f} GPU hours (estimate)."]) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gemini_pl.reproduce.cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--tflops", type=float, default=20.0, help="assumed sustained GPU TFLOP/s")
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args(argv)
    print(estimate(a.tflops, a.seeds))


if __name__ == "__main__":  # pragma: no cover
    main()
