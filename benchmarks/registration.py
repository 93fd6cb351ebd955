"""Registration on held-out pairs: classical anchors and GEMINI's registration variants, same pairs.

Usage::

    python benchmarks/registration.py --root data --dataset mni2d [--anchors demons,greedy,syn] \\
        --model "published=runs/demo/pretrain/checkpoints/last.ckpt" \\
        --model "velocity=runs/demo/pretrain_svf/checkpoints/last.ckpt" \\
        --model "reg=runs/demo/reg/checkpoints/last.ckpt" [--pairs 20] [--device cuda] [--out table.md]

Every method is a module with the one registration path of the project
(:class:`~gemini_pl.modules.reg_eval.RegistrationEvaluation`): the classical anchors of
``--anchors`` (``ClassicalRegistration``, each scored from the tool's own field: the label warped
by it, folding and SDlogJ computed from it) — ``demons`` (SimpleITK symmetric-forces demons,
histogram matched, ``gemini_pl.classical.DEMONS_DEFAULTS``), ``greedy`` (Greedy, NCC radius 2,
100x50x20 iterations, smoothing 1.5 / 0.5 voxels, no affine stage; ``greedy_affine``: Greedy's
affine stage first, not run by default) and ``syn`` (ANTs
``SyNCC``: rigid, affine, then SyN with CC; the whole transform composed into one field) — by
default demons and those of the ``bench`` extra that are installed (``pip install
"gemini-pl[bench]"``), each on ``--threads`` CPU threads (default 1); ``--no-demons`` leaves
demons out — and each ``--model NAME=CHECKPOINT`` (a ``GeminiPretrain``,
``GeminiSemi`` or ``Registration`` checkpoint written by ``gemini-pl fit``; rebuilt from its
hyper-parameters by ``gemini_pl.apps.checkpoint.load_model``; its deformation model —
``integration_steps`` etc. — is the one it was trained with). The pairs are the data module's
evaluation pairs of the test subjects (``eval_mode: pairs``, i → i+1 mod n: those of
``experiments/demo_mni``), one pair at a time.

Prints one row per method: warped-label Dice (foreground classes, %), HD95 (mm when the data carry
the spacing, else voxels), folding % and SDlogJ of the field — means ± standard deviations over
the pairs — and the wall time per pair of the registration itself (field + warps, instance
optimisation included: ``--refine 50`` adds a row ``NAME + refine 50`` per model,
``--cascade 1 2`` a row ``NAME, 2 passes`` (the network applied twice, the second pass on the warped
moving image) beside each, ``--cascade-levels 2`` the passes after the first on 2 pyramid levels,
``--refine-identity`` the refinement alone from a zero field; for the networks after one warm-up
pair, CUDA synchronised; in the process settings of the ``gemini-pl`` command, freed memory kept for
reuse (:func:`gemini_pl.runtime.keep_freed_memory`; ``--default-malloc`` leaves glibc's defaults),
the same for every method). ``--json FILE`` also writes every pair's values per method.

Over training seeds (one ``--json`` file per seed; a deterministic method such as demons may sit in
a file of its own)::

    python benchmarks/registration.py --summary seed0.json seed1.json seed2.json demons.json \
        --reference "demons (SimpleITK, symmetric forces)"

prints, per method, the per-seed mean Dice and folding and — against the reference — the paired
per-pair Dice difference within each seed, summarised over seeds with the verdict of
:func:`gemini_pl.claims.seed_summary` (holds only when it is positive in every seed and over two
standard errors over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from gemini_pl.apps.checkpoint import load_model
from gemini_pl.claims import paired_differences, sample_sd, seed_summary
from gemini_pl.data import GeminiDataModule
from gemini_pl.errors import ConfigError
from gemini_pl.metrics import DiceScore, HausdorffDistance95, folding_percent, sdlogj
from gemini_pl.modules.batches import case_spacing
from gemini_pl.modules.seg_eval import nanmean
from gemini_pl.runtime import keep_freed_memory


def load_module(path: str | Path) -> torch.nn.Module:
    """The registration module of a ``gemini-pl fit`` checkpoint (``GeminiPretrain``, ``GeminiSemi``,
    ``Registration``, ...), in eval mode on the CPU, by :func:`gemini_pl.apps.checkpoint.load_model`
    (weights with ``weights_only=True``; in 3D the training patch as the sliding window)."""
    return load_model(path, "cpu", need="deformer").model


def refined(module: torch.nn.Module, steps: int, lr: float | None = None, levels: int | None = None,
            passes: int = 1, cascade_levels: int | None = None) -> torch.nn.Module:
    """``module`` with ``passes`` network passes per pair (those after the first with
    ``cascade_levels`` pyramid levels; None: the checkpoint's) and its test-time instance
    optimisation (``steps`` Adam steps per pair, shared between ``levels`` image resolutions; 0: off)."""
    module.set_cascade(passes, cascade_levels)
    if steps:
        module.set_refinement(steps, lr, levels=levels)
    return module


def identity_module(spatial_dims: int) -> torch.nn.Module:
    """A ``Registration`` whose deformer outputs zero (a velocity field, as the refinement's residual):
    with refinement on, the instance optimisation alone."""
    from gemini_pl.modules import Registration

    module = Registration(spatial_dims=spatial_dims, integration_steps=7, widths=[8] * 9, deformer_widths=[8] * 5)
    torch.nn.init.zeros_(module.net.deformer.flow.weight)
    return module.eval()


#: the table's row of each classical anchor (``--anchors``)
ANCHOR_NAMES = {
    "demons": "demons (SimpleITK, symmetric forces)",
    "greedy": "Greedy (NCC r2, 100x50x20, no affine)",
    "syn": "ANTs SyN (CC, SyNCC: rigid + affine + SyN)",
    "greedy_affine": "Greedy (NCC r2, 100x50x20, affine first)",
}
#: anchor → (classical method, its options); run by default: demons and the installed methods without options
ANCHORS = {"demons": ("demons", {}), "greedy": ("greedy", {}), "syn": ("syn", {}), "greedy_affine": ("greedy", {"affine": True})}


def demons_module(spatial_dims: int, threads: int | None = None) -> torch.nn.Module:
    from gemini_pl.modules import DemonsRegistration

    return DemonsRegistration(spatial_dims=spatial_dims, threads=threads).eval()


def anchor_module(method: str, spatial_dims: int, threads: int | None = None) -> torch.nn.Module:
    """The ``ClassicalRegistration`` of one anchor of :data:`ANCHORS` (demons: ``DemonsRegistration``)."""
    from gemini_pl.modules import ClassicalRegistration

    if method == "demons":
        return demons_module(spatial_dims, threads)
    method, options = ANCHORS[method]
    return ClassicalRegistration(spatial_dims=spatial_dims, method=method, options=options, threads=threads).eval()


def parse_anchors(spec: str | None, no_demons: bool = False) -> list[str]:
    """The anchors to run: ``spec`` ("demons,greedy,syn"), or demons and every installed tool of
    the ``bench`` extra; ``no_demons`` drops demons. A named tool that is missing is a ConfigError."""
    from gemini_pl.classical import BENCH_EXTRA, method_installed

    if spec is None:
        anchors = [m for m, (method, options) in ANCHORS.items() if not options and method_installed(method)]
    else:
        anchors = [m.strip() for m in spec.split(",") if m.strip()]
        for m in anchors:
            if m not in ANCHOR_NAMES:
                raise ConfigError(f"--anchors: unknown anchor {m!r}, expected a subset of {','.join(ANCHOR_NAMES)}")
            if not method_installed(ANCHORS[m][0]):
                raise ConfigError(f"--anchors: {m} is not installed: {BENCH_EXTRA}")
    return [m for m in dict.fromkeys(anchors) if not (no_demons and m == "demons")]


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(module: torch.nn.Module, pairs: list[dict[str, Any]], num_classes: int, label_kind: str,
             device: torch.device, warmup: bool = True) -> dict[str, list[float]]:
    """Per-pair ``dice`` (%), ``hd95``, ``folding`` (%), ``sdlogj``, ``seconds`` and ``pair``
    (``"<moving>_to_<fixed>"``) of one method; ``warmup``: register the first pair once, untimed,
    before the timed pairs (the classical anchors, CPU tools without kernels to load, skip it)."""
    module = module.to(device)
    dice = DiceScore(num_classes=num_classes, label_kind=label_kind).to(device)
    hd95 = HausdorffDistance95(num_classes=num_classes, label_kind=label_kind).to(device)
    rows: dict[str, list[Any]] = {"dice": [], "hd95": [], "folding": [], "sdlogj": [], "seconds": [], "pair": []}
    if warmup:
        module.register_pair(_to(pairs[0], device))  # warm-up (kernels, caches)
    for batch in pairs:
        batch = _to(batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = module.register_pair(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rows["seconds"].append(time.perf_counter() - start)
        dice.update(out["warped_label"], batch["label_b"])
        hd95.update(out["warped_label"], batch["label_b"], case_spacing(batch, ("spacing_b", "spacing"), ("meta_b", "meta")))
        rows["dice"].append(100 * nanmean(dice.last[0].cpu()))
        rows["hd95"].append(nanmean(hd95.last[0].cpu()))
        rows["folding"].append(float(folding_percent(out["flow"])[0]))
        rows["sdlogj"].append(float(sdlogj(out["flow"])[0]))
        rows["pair"].append(f"{_name(batch, 'name_a')}_to_{_name(batch, 'name_b')}")
    return rows


def _name(batch: dict[str, Any], key: str) -> str:
    v = batch.get(key, "?")
    return str(v[0] if isinstance(v, (list, tuple)) else v)


def _cases(rows: dict[str, list]) -> list[dict[str, Any]]:
    return [{"case": p, "dice": d} for p, d in zip(rows["pair"], rows["dice"])]


def summary(files: list[Path], reference: str | None) -> str:
    """The multi-seed table of ``--summary``: one ``--json`` file per seed. A method is compared
    with the reference of its own file, or with the one reference of the only file that holds it
    (a deterministic method run once)."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    by_method: dict[str, list[tuple[int, dict[str, list]]]] = {}
    for i, run in enumerate(runs):
        for name, rows in run.items():
            by_method.setdefault(name, []).append((i, rows))
    if reference is not None and reference not in by_method:
        raise ConfigError(f"--reference {reference!r} is in none of the --summary files")
    lines = ["| method | seeds | Dice (%) per seed | folding (%) per seed | SDlogJ per seed |"
             + (f" Δ Dice vs {reference} (points): per seed; mean ± std over seeds | verdict | pairs higher |"
                if reference else ""),
             "|---|---:|---|---|---|" + ("---|---|---:|" if reference else "")]
    for name, entries in by_method.items():
        cells = [", ".join(f"{statistics.fmean(rows[k]):.{d}f}" for _, rows in entries)
                 for k, d in (("dice", 2), ("folding", 3), ("sdlogj", 2))]
        line = f"| {name} | {len(entries)} | " + " | ".join(cells) + " |"
        if reference and name == reference:
            line += " – | – | – |"
        elif reference:
            diffs = []
            for i, rows in entries:
                ref = runs[i].get(reference) or by_method[reference][0][1]
                diffs.append(paired_differences(_cases(rows), _cases(ref), "dice"))
            sm = seed_summary(diffs)
            line += (f" {', '.join(f'{m:+.2f}' for m in sm['means'])}; {sm['mean']:+.2f} ± {sm['sd']:.2f} |"
                     f" {sm['verdict']} | {sm['wins']}/{sm['pairs']} |")
        lines.append(line)
    return "\n".join(lines)


def _fmt(values: list[float], digits: int) -> str:
    return f"{statistics.fmean(values):.{digits}f} ± {sample_sd(values):.{digits}f}"


def table(results: dict[str, dict[str, list[float]]], hd_unit: str) -> str:
    lines = [f"| method | warped-label Dice (%) | HD95 ({hd_unit}) | folding (%) | SDlogJ | s / pair |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {_fmt(r['dice'], 2)} | {_fmt(r['hd95'], 2)} | {_fmt(r['folding'], 3)} | "
                     f"{_fmt(r['sdlogj'], 3)} | {statistics.fmean(r['seconds']):.4f} |")
    return "\n".join(lines)


def parse_models(specs: list[str]) -> dict[str, str]:
    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--model expects NAME=CHECKPOINT, got {spec!r}")
        models[name] = path
    return models


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data")
    ap.add_argument("--dataset", default="mni2d", help="mni2d or mni3d (any labeled dataset with test subjects works)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT")
    ap.add_argument("--pairs", type=int, default=None, help="only the first N test pairs (default all)")
    ap.add_argument("--num-val-pairs", type=lambda v: None if v == "all" else int(v), default=20,
                    help="evaluation pairs the data module builds (20: as experiments/demo_mni; 'all': every ordered "
                         "pair of different test subjects, as experiments/synthseg)")
    ap.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                    help="resample the pairs to this voxel spacing first (data.preprocessing.spacing; default the files')")
    ap.add_argument("--anchors", default=None, metavar="LIST",
                    help="classical anchors, comma separated, of demons,greedy,syn,greedy_affine (default: demons and the installed ones of demons,greedy,syn)")
    ap.add_argument("--no-demons", action="store_true", help="leave demons out of the anchors")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of each classical anchor (0: the tools' default)")
    ap.add_argument("--refine", type=int, nargs="+", default=[], metavar="STEPS",
                    help="also each --model with test-time instance optimisation of STEPS steps (one row per value)")
    ap.add_argument("--refine-lr", type=float, default=None, help="refinement step size (default the checkpoint's, else 0.5)")
    ap.add_argument("--refine-levels", type=int, default=None,
                    help="image resolutions the refinement steps are shared between, coarsest first (default the checkpoint's, else 1)")
    ap.add_argument("--cascade", type=int, nargs="+", default=[1], metavar="PASSES",
                    help="network passes per pair of each --model (one row per value, each also with every --refine): "
                         "each pass registers the warped moving image again and composes (default 1)")
    ap.add_argument("--cascade-levels", type=int, nargs="+", default=[None], metavar="LEVELS",
                    help="pyramid levels of the passes after the first, for every --cascade value above 1 (one row per "
                         "value, named 'NAME, P passes, later L levels'; default the checkpoint's)")
    ap.add_argument("--identity", action="store_true",
                    help="also the row of no registration (a zero field): the unwarped Dice each method must beat")
    ap.add_argument("--refine-identity", action="store_true",
                    help="also the refinement alone, from the identity (no network): the instance optimisation's own share")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc malloc's thresholds alone (default: gemini_pl.runtime.keep_freed_memory, as the "
                         "gemini-pl command does, so that the seconds per pair are those of gemini-pl register)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    ap.add_argument("--json", type=Path, default=None, help="also write every pair's values per method here")
    ap.add_argument("--summary", type=Path, nargs="+", default=None, metavar="JSON",
                    help="only summarise --json files of several seeds (see the module doc)")
    ap.add_argument("--reference", default=None, help="with --summary: the method every other one is compared with")
    args = ap.parse_args(argv)
    if args.summary:
        text = summary(args.summary, args.reference)
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n")
        return text
    kept = False if args.default_malloc else keep_freed_memory()  # every method, anchors included, in one process
    models = parse_models(args.model)
    anchors = parse_anchors(args.anchors, args.no_demons)
    if not (anchors or models or args.identity or (args.refine_identity and args.refine)):
        raise ConfigError("nothing to benchmark: give --model NAME=CHECKPOINT, --anchors, --identity, "
                          "--refine-identity with --refine STEPS, or drop --no-demons")
    dm = GeminiDataModule(root=args.root, dataset=args.dataset, eval_mode="pairs", num_val_pairs=args.num_val_pairs,
                          preprocessing={"spacing": args.spacing} if args.spacing else None)
    dm.setup("test")
    pairs = [b for b in dm.test_dataloader()]
    pairs = [{k: (v[i:i + 1] if torch.is_tensor(v) else v) for k, v in b.items()} for b in pairs for i in range(b["image_a"].shape[0])]
    pairs = pairs[: args.pairs]
    num_classes, label_kind = int(dm.num_classes), dm.label_kind or "multiclass"
    hd_unit = "mm" if case_spacing(pairs[0], ("spacing_b", "spacing"), ("meta_b", "meta")) is not None else "voxels"
    device = torch.device(args.device)
    threads = args.threads or None
    methods: dict[str, Any] = {ANCHOR_NAMES[m]: (lambda m=m: anchor_module(m, dm.spatial_dims, threads)) for m in anchors}
    no_warmup = set(methods)
    for name, path in models.items():
        for passes in args.cascade:
            for later in args.cascade_levels if passes > 1 else [None]:
                row = name if passes == 1 else f"{name}, {passes} passes" + (f", later {later} levels" if later else "")
                for steps in [0, *args.refine]:
                    methods[row + (f" + refine {steps}" if steps else "")] = (
                        lambda path=path, steps=steps, passes=passes, later=later: refined(
                            load_module(path), steps, args.refine_lr, args.refine_levels, passes, later))
    if args.identity:
        methods["no registration (identity)"] = lambda: identity_module(dm.spatial_dims)
    for steps in args.refine if args.refine_identity else []:
        methods[f"refinement alone (from the identity), {steps} steps"] = (
            lambda steps=steps: refined(identity_module(dm.spatial_dims), steps, args.refine_lr, args.refine_levels))
    print(f"{len(pairs)} test pairs of {args.root}/{args.dataset} on {device}; keep_freed_memory: {kept}", flush=True)
    results = {}
    for name, make in methods.items():
        results[name] = evaluate(make(), pairs, num_classes, label_kind, device, warmup=name not in no_warmup)
        print(f"  {name}: done", flush=True)
        if args.json is not None:  # after every method: a run cut short keeps what it finished
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    text = table(results, hd_unit)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
