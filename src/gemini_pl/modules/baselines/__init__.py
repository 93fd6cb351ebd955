"""The Table II baselines, each a small module on a shared base (see ``experiments/table2/``).

Semi-supervised (on :class:`~.common.SemiSegmentation`, i.e. ``Segmentation`` + an unlabeled loss):
:class:`UAMT`, :class:`CPS`, :class:`DeepAtlas`, :class:`MASSL`; DPA-DBN as :class:`DPAPrior`
(autoencoder pre-training) then :class:`DPADBN` (``Segmentation`` with the frozen prior). Atlas: :class:`VMAtlas` (``Registration`` +
multi-atlas label propagation), :class:`LCVMAtlas` (+ the label Dice term), :class:`LTNet` (forward–backward
correspondence cycle). Learning registration to learn segmentation (on :class:`RegSegBase`: a segmenter + a separate
registration network, stepped in turn): :class:`DataAug`, :class:`DeepRS`, :class:`PCRegRT`, :class:`BRBS`. Dense contrastive pre-training (on :class:`DensePretrainBase`),
fine-tuned by ``Segmentation(init_from=...)``: :class:`DenseCL`, :class:`PixPro`, :class:`VADeR`,
:class:`SetSim`, :class:`DSCPM`, :class:`GLCL` (momentum encoder, queues of negatives as buffers, two random-resized-crop views: :mod:`.views`).
Each module's docstring lists its paper's weights (with the source line) and what stays simplified;
the rendered Table II carries the latter as a footnote per row.
GEMINI-Semi ablations: :class:`GeminiSemiPosSchedule` (Table IV "on from half way").
"""

from .common import SemiSegmentation, ema_update, run_steps, sigmoid_rampup
from .cps import CPS, cps_loss
from .dcrl import DensePretrainBase, FeatureQueue, info_nce
from .deepatlas import DeepAtlas, anatomy_loss
from .densecl import DenseCL
from .pixpro import PixPro
from .semi_ablation import GeminiSemiPosSchedule
from .uamt import UAMT
from .vader import VADeR
from .vm_atlas import VMAtlas, majority_vote
from .lcvm import LCVMAtlas
from .ltnet import LTNet
from .lrls import RegSegBase
from .dataaug import DataAug
from .deeprs import DeepRS
from .pcreg import PCRegRT
from .brbs import BRBS

__all__ = [
    "CPS", "DeepAtlas", "DenseCL", "DensePretrainBase", "FeatureQueue", "GeminiSemiPosSchedule", "PixPro",
    "SemiSegmentation", "UAMT", "VADeR", "VMAtlas", "anatomy_loss", "cps_loss", "ema_update", "info_nce",
    "majority_vote", "run_steps", "sigmoid_rampup",
]
__all__ += ["BRBS", "DataAug", "DeepRS", "LCVMAtlas", "LTNet", "PCRegRT", "RegSegBase"]
from .massl import MASSL
from .dpa import DPADBN, DPAPrior
from .setsim import SetSim
from .dsc import DSCPM
from .glcl import GLCL

__all__ += ["DPADBN", "DPAPrior", "DSCPM", "GLCL", "MASSL", "SetSim"]
