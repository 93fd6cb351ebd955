"""The paper's Table II (He et al., TPAMI 2025) and the ablation facts, as data (``shared/spec/TABLE2.md``).

``TABLE2[row] = (type, {task: (dsc_mean, dsc_std, avd_mean, avd_std)})``; ``None`` = "-" (setting not
possible), an AVD of ``None`` with a DSC = "unable". ``NOTES[row]``: the footnote of an implemented
row, what it keeps simplified relative to its own paper (details and sources: the module docstrings
in ``gemini_pl/modules/baselines/``).
"""

from __future__ import annotations

TASKS = ("T1", "T2", "T3")

_ROWS = """
Full|U-Net Full|-|-|88.7±1.2|0.31±0.04|96.1±1.4|2.28±1.00
Five|U-Net Five|84.3±9.6|2.43±2.14|69.5±8.8|1.59±0.84|83.4±6.9|10.34±4.80
Semi|UA-MT|66.4±16.2|4.69±2.27|75.5±3.4|1.31±0.95|83.9±6.2|9.52±4.03
Semi|CPS|87.4±5.4|1.40±0.76|37.1±1.8|unable|63.2±1.4|19.57±5.67
Semi|MASSL|77.4±8.7|9.07±3.11|80.5±3.1|0.92±0.43|81.9±7.0|10.99±4.58
Semi|DPA-DBN|68.0±14.5|5.75±3.89|68.7±8.2|3.90±2.39|67.4±8.7|24.05±6.75
Atlas|VoxelMorph (VM)|81.0±6.1|2.13±0.78|83.1±1.8|0.56±0.08|59.9±5.0|15.36±4.34
Atlas|LC-VM|81.7±6.0|2.04±0.77|83.0±1.8|0.56±0.07|60.2±7.4|14.72±4.89
Atlas|LT-Net|77.8±7.8|2.25±0.95|82.6±1.2|0.57±0.05|60.4±7.4|14.62±4.84
LRLS|DeepAtlas|87.9±4.3|1.30±0.57|79.3±2.6|0.74±0.12|64.8±9.6|12.87±3.56
LRLS|DataAug|82.2±5.2|2.04±0.73|83.9±1.2|0.55±0.06|22.2±2.8|unable
LRLS|DeepRS|87.0±5.0|1.60±0.90|73.0±5.9|0.93±0.25|86.0±5.6|8.55±3.98
LRLS|PC-Reg-RT|88.5±4.9|1.23±0.72|73.1±3.1|1.09±0.17|59.1±3.6|20.71±5.21
LRLS|BRBS|91.1±3.9|0.93±0.57|87.2±1.0|0.43±0.05|71.5±6.4|10.85±2.99
DCRL|VADeR|85.4±4.7|1.69±0.77|81.2±3.2|0.59±0.13|79.9±5.8|8.95±3.37
DCRL|DenseCL|87.3±4.3|1.52±0.79|83.9±1.9|0.48±0.09|77.1±8.8|12.11±6.51
DCRL|SetSim|87.0±4.5|1.60±0.84|81.2±3.0|0.58±0.13|79.0±7.3|11.72±5.03
DCRL|DSC-PM|87.0±4.6|1.60±0.86|82.6±2.1|0.53±0.09|85.7±6.2|7.33±3.32
DCRL|PixPro|89.5±3.9|1.31±0.75|86.3±1.2|0.38±0.04|83.3±8.7|8.73±4.55
DCRL|GLCL|84.5±7.0|1.82±1.09|83.0±2.7|0.52±0.11|85.5±8.9|8.65±5.18
DCRL|GEMINI-Semi|91.2±3.6|0.97±0.56|87.3±1.0|0.35±0.03|87.7±5.2|7.14±3.63
"""


def _pm(text: str) -> tuple[float, float] | None:
    if text in ("-", "unable"):
        return None
    m, s = text.split("±")
    return float(m), float(s)


def _parse() -> dict[str, tuple[str, dict[str, tuple | None]]]:
    out = {}
    for line in _ROWS.strip().splitlines():
        typ, name, *vals = line.split("|")
        cells = {}
        for i, task in enumerate(TASKS):
            dsc, avd = _pm(vals[2 * i]), _pm(vals[2 * i + 1])
            cells[task] = None if dsc is None else (*dsc, *(avd or (None, None)))
        out[name] = (typ, cells)
    return out


#: row → (type, {task: (dsc, dsc_std, avd, avd_std) | None})
TABLE2 = _parse()

#: Table IV (T1): GSS positive-pair term schedule → seg DSC (mean, std)
TABLE4 = {"off": (90.3, 3.6), "half way": (90.5, 3.5), "always": (91.2, 3.6)}

#: Table V (T1): (seg DSC, deformation DSC, folding %) as (mean, std) pairs
TABLE5 = {"GVS only": ((89.3, 4.1), (51.3, 10.3), (40.8, 1.2)), "GSS only": ((90.0, 3.4), (84.1, 13.0), (10.2, 2.2))}

#: Footnotes of the rendered Table II: what an implemented row keeps simplified relative to its paper
#: (each row: same GEMINI backbone, data and step budget as the others).
NOTES = {
    "UA-MT": "GEMINI U-Net instead of V-Net; supervised loss the shared multi-class CE + Dice (UA-MT: binary); "
             "1 labeled + 2 unlabeled images per iteration (UA-MT: 2 + 2). Weights, noise and ramp-ups as UA-MT's "
             "code: 0.5·(CE + Dice) + 0.1·consistency, noise on the teacher's input only, ramp-ups over the whole run.",
    "CPS": "GEMINI U-Net instead of DeepLabv3+ / ResNet-50; supervised loss CE + Dice (CPS: CE). Weights as CPS: "
           "supervised 1 per network, CPS 1.5, no ramp-up.",
    "VoxelMorph (VM)": "GEMINI backbone + deformer instead of VoxelMorph's U-Net; masked LNCC + 0.4·smoothness; "
                       "the five atlases' warped labels fused by majority vote.",
    "LC-VM": "the VM row's network and loss (GEMINI backbone + deformer, masked LNCC + 0.4·smoothness) + the label "
             "Dice term with γ = 1 (LC-VoxelMorph λ = 1) on the two labeled samples of a batch paired with each other "
             "(VoxelMorph-LC: every labeled pair); majority vote of the five atlases' warped labels.",
    "LT-Net": "GEMINI backbone + deformer for the forward and the backward correspondence; masked LNCC; cycle weights "
              "image 1, label 1, correspondence 0.1 and smoothness 0.4 chosen here (published values not checked); one "
              "unlabeled target per iteration; majority vote of the five atlases' transferred labels.",
    "DataAug": "GEMINI backbone + deformer as the spatial model and a GEMINI U-Net as the appearance model (additive "
               "intensity, plain smoothness of weight 1 instead of the boundary-aware one); transform models and "
               "segmenter trained in one run, alternating steps, on pairs synthesised on the fly.",
    "DeepRS": "GEMINI U-Net segmenter + separate GEMINI registration network; perturbation factor as a random scaling "
              "α ~ U(0, 1) of the displacement; 3-layer pixel-wise discriminator; weights (region 1, adversarial 0.1, "
              "weak 1, smoothness 0.4) chosen here (published values not checked).",
    "PC-Reg-RT": "GEMINI U-Nets; masked LNCC per region channel; segmenter loss CE + Dice (official: CE); the labeled "
                 "image's regions from its label (official: the prediction); one stage, no unlabeled-unlabeled pairs; "
                 "reverse-teaching weights 1 / 0.5 as the official code.",
    "BRBS": "GEMINI U-Nets; masked LNCC; otherwise as the official code: SeC 100, inverse 0.1, smoothness 1, "
            "spatial + style augmentation and mix consistency 0.01 with Beta(0.3, 0.3) draws, Dice loss.",
    "DeepAtlas": "one shared GEMINI backbone for the segmentation and registration networks, trained jointly in one "
                 "step per iteration (DeepAtlas: two networks, pre-trained, then alternating); weights supervised 3 : "
                 "anatomy 2 : similarity 1 from MONAI's DeepAtlas tutorial (no published joint-training code); "
                 "diffusion smoothness 0.4 (DeepAtlas: bending energy).",
    "VADeR": "GEMINI U-Net instead of ResNet-50 + FPN, no MoCo initialisation; 64 matching pixels per image; a queue "
             "of 32,768 pixel keys (the age of MoCo's queue at 2 images per iteration); grey-level jitter only.",
    "DenseCL": "GEMINI U-Net features pooled to 8 cells per axis instead of ResNet-50's 7 × 7 C5 map; queues of 512 "
               "keys instead of 65,536 (the same 256-iteration age at 2 images per iteration); grey-level jitter only.",
    "PixPro": "GEMINI U-Net features pooled to 8 cells per axis instead of ResNet-50's 7 × 7 C5 map; projector "
              "without BatchNorm; grey-level jitter only (BYOL's views otherwise, crops 0.08–1).",
    "MASSL": "GEMINI U-Net as the shared part, its segmentation head and a second head of the same form as the two "
             "branches (MASSL: two decoders on a shared encoder); regions = the prediction's classes (multi-label: each "
             "channel + the common background); alternating steps with one Adam (MASSL: two, lr 1e-2 / 1e-3); supervised "
             "loss CE + Dice (MASSL: Dice).",
    "DPA-DBN": "GEMINI U-Net instead of DenseBiasNet (no dense biased connections); the frozen autoencoder's features of "
               "every level, upsampled, enter at the segmenter's input (DPA-DBN: inside DenseBiasNet's layers); plain AE with "
               "GroupNorm, pre-trained with the DCRL rows' pre-training budget; supervised loss CE + Dice.",
    "SetSim": "DenseCL's branches on GEMINI U-Net features pooled to 8 cells per axis instead of ResNet-50's 7 × 7 C5 "
              "map; queues of 512 keys (the age of the published queue at 2 images per iteration); cross-view nearest "
              "neighbours on (the paper's method; the published script has them off); grey-level jitter only.",
    "DSC-PM": "no published code: instance (MoCo v2), pixel (geometric + feature-neighbour positives) and semantic "
              "(pixel-to-prototype with Sinkhorn targets + cross-image pixel contrast by the prototypes' classes) losses "
              "as the paper describes them; weights 0.5 / 0.5 / 0.5, "
              "32 prototypes and Sinkhorn ε 0.05 chosen here; GEMINI U-Net features pooled to 8 cells per axis; queues "
              "of 512 keys; grey-level jitter only.",
    "GLCL": "GEMINI U-Net (bottleneck = its 5th encoder level, decoder output pooled to 8 cells per axis); random "
            "positives G_R only (the domain-specific G_D / L_D need volumes split into partitions of corresponding "
            "slices); every other region a negative (the code: 5); global then local stage, half of the run each.",
}
