"""``gemini-pl convert``: the paper's datasets from their official downloads to the canonical layout.

Usage::

    gemini-pl convert scr --src /downloads/jsrt_scr --root /data/gemini
    gemini-pl convert whs_ct --src /downloads/MM-WHS --root /data/gemini --num-test 5

One module per dataset holds only its provider's format (file names, folders, byte layout,
intensity and label conventions; each docstring cites where the format is documented):

===========  ===================  =============================================================
dataset      module               reads
===========  ===================  =============================================================
whs_ct       :mod:`.whs_ct`       MM-WHS ``ct_train_1001_image.nii.gz`` / ``_label.nii.gz``
asoca        :mod:`.asoca`        ASOCA ``<Cohort>/CTCA``, ``Annotations``, ``Testset_*`` NRRD
cat08        :mod:`.cat08`        CAT08 ``datasetNN/imageNN.mhd`` + ``.raw`` (MetaImage)
kipa22       :mod:`.kipa22`       KiPA22 ``<part>/image`` + ``<part>/label`` NIfTI
candi        :mod:`.candi`        CANDI ``<subject>_procimg.nii.gz`` + ``_seg.nii.gz``
ppmi         :mod:`.ppmi`         PPMI DICOM series (LONI IDA download)
chestxray8   :mod:`.chestxray8`   NIH ``images_0NN.tar.gz`` + ``Data_Entry_2017.csv``
scr          :mod:`.scr`          JSRT ``.IMG`` (12-bit big-endian raw) + SCR GIF masks
===========  ===================  =============================================================

The mechanism they share — duplicates, the patient-level test split, idempotent reruns, never
overwriting without ``--force``, the ``convert.json`` provenance record — is :mod:`.base`. The
run ends with ``check-data``'s report of the converted dataset (``--no-check`` skips it). Exit
status: 0 when everything was converted and checked without a problem, 1 otherwise (the report
lists each file), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from gemini_pl.errors import GeminiError

__all__ = ["CONVERTERS", "convert", "converter", "main"]

#: dataset name -> module name (in this package)
CONVERTERS = {
    "whs_ct": "whs_ct", "asoca": "asoca", "cat08": "cat08", "kipa22": "kipa22", "candi": "candi",
    "ppmi": "ppmi", "chestxray8": "chestxray8", "scr": "scr",
}


#: the converters' options and their defaults (``options`` of :func:`convert`)
DEFAULTS = {"ct_offset": "auto", "masks": None, "series": None, "test_fold": 2}


def converter(name: str) -> ModuleType:
    """The module converting dataset ``name`` (a spec name or an alias such as ``mmwhs``, ``jsrt``)."""
    key = name.lower()
    for ds, mod in CONVERTERS.items():
        m = importlib.import_module(f"{__name__}.{mod}")
        if key == ds or key in m.ALIASES:
            return m
    raise GeminiError(f"no converter for dataset {name!r}; known: {', '.join(CONVERTERS)}")


def convert(dataset: str, src: str | Path, root: str | Path, *, force: bool = False, verify: bool = False,
            num_test: int = 0, num_unlabeled: int = 0, into: str | None = None, seed: int = 0,
            dry_run: bool = False, progress: bool = False, **options: Any):
    """Convert the download at ``src`` into ``<root>/<folder of dataset>`` (``into``: its images, as
    unlabeled training images of that dataset's folder); returns the :class:`~.base.ConvertResult`
    (``options``: ``ct_offset``, ``masks``, ``series``, ``test_fold``)."""
    from gemini_pl.data.convert.base import Context, load_record, run_plan
    from gemini_pl.data.specs import get_spec

    mod = converter(dataset)
    spec = get_spec(mod.DATASET)
    src = Path(src)
    if not src.is_dir():
        raise GeminiError(f"--src {src} is not a folder (the official download, extracted)")
    if into is not None:
        into = converter(into).DATASET
        if into == mod.DATASET:
            into = None
    target = get_spec(into) if into is not None else spec
    data_dir = Path(root) / target.dir_name
    record = load_record(data_dir / ("convert.json" if into is None else f"convert-{mod.DATASET}.json"))
    # the settings recorded (a change converts every case again): those that differ from the defaults
    settings = {k: v for k, v in options.items() if v is not None and DEFAULTS.get(k, object()) != v}
    ctx = Context(src.resolve(), settings, record)
    plan = mod.plan(ctx)
    if mod.EXPECTED and len(plan.items) < mod.EXPECTED:
        plan.notes.append(f"{len(plan.items)} of the {mod.EXPECTED} cases {spec.title} is distributed with")
    label_as_mask = "label" in spec.mask_dirs.get("unlabeled", ()) and spec.preprocessing.brain_mask != "none"
    return run_plan(plan, ctx, data_dir, dataset=mod.DATASET, converter=mod.__name__, force=force,
                    verify=verify, num_test=num_test, num_unlabeled=num_unlabeled, label_as_mask=label_as_mask,
                    into=into, seed=seed, dry_run=dry_run, progress=progress)


def check_converted(dataset: str, root: str | Path, **options: Any):
    """``check-data``'s report of the converted dataset (a :class:`~gemini_pl.data.check.CheckReport`)."""
    from gemini_pl.data.check import check_data
    from gemini_pl.data.convert.base import Context
    from gemini_pl.data.datamodule import GeminiDataModule
    from gemini_pl.data.specs import get_spec

    mod = converter(dataset)
    spec = get_spec(mod.DATASET)
    extra = mod.check_overrides(Context(Path("."), options)) if hasattr(mod, "check_overrides") else {}
    data = Path(root) / spec.dir_name
    # a labeled dataset is checked as segmentation data (train on the labeled cases, test on the test
    # cases) when it has both; else as pre-training pairs (a dataset without a test split yet)
    segmentation = (spec.label_kind is not None and (data / "train/labeled").is_dir()
                    and (data / "test/labeled").is_dir())
    dm = GeminiDataModule(root=str(root), dataset=spec.name, split_file=None, cache=False, num_labeled=None,
                          train_mode="labeled" if segmentation else "pairs",
                          eval_mode="cases" if segmentation else "pairs", **extra)
    return check_data(dm)


def build_parser() -> argparse.ArgumentParser:
    names = []
    for ds in CONVERTERS:
        m = converter(ds)
        names.append(f"  {ds:<11} {m.TITLE}" + (f" (also: {', '.join(m.ALIASES)})" if m.ALIASES else ""))
    parser = argparse.ArgumentParser(
        prog="gemini-pl convert", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a dataset's official download into the canonical layout gemini-pl reads "
                    "(<root>/<folder>/...), write <root>/<folder>/convert.json (sources, checksums, what "
                    "was done) and end with check-data's report.",
        epilog="datasets:\n" + "\n".join(names) + "\n\nReruns convert only what changed; an existing file "
        "with other content is never overwritten without --force. data/README.md has a section per dataset.")
    parser.add_argument("dataset", help="one of: " + ", ".join(CONVERTERS))
    parser.add_argument("--src", required=True, help="the official download, as distributed (extracted folder)")
    parser.add_argument("--root", required=True, help="the data root (data.root); the dataset goes to <root>/<folder>")
    parser.add_argument("--force", action="store_true", help="replace existing files whose content differs")
    parser.add_argument("--verify", action="store_true",
                        help="re-hash sources and outputs instead of trusting size and modification time")
    parser.add_argument("--num-test", type=int, default=0,
                        help="move N labeled training cases (whole patients) to test/labeled (default 0)")
    parser.add_argument("--num-unlabeled", type=int, default=0,
                        help="use N labeled training cases (whole patients) as unlabeled training images "
                             "(CANDI: their labels become the brain masks, as in the authors' copy)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --num-test/--num-unlabeled draws (default 0)")
    parser.add_argument("--into", default=None, metavar="DATASET",
                        help="write the images only, as unlabeled training images of DATASET's folder "
                             "(e.g. asoca and cat08 --into whs_ct for Semi T1); record convert-<dataset>.json")
    parser.add_argument("--ct-offset", default="auto",
                        help="CT: value added to the stored intensities; auto (default): 1024 for files in "
                             "plain HU (minimum below -200), else 0 (the specs expect HU + 1024)")
    parser.add_argument("--masks", default=None, help="CANDI: folder of brain masks <subject>.nii.gz")
    parser.add_argument("--series", default=None, help="PPMI: keep series whose description matches this regex")
    parser.add_argument("--test-fold", type=int, default=2, choices=(0, 1, 2),
                        help="SCR: the fold written to test/labeled (default 2; 0: none)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be written; write nothing")
    parser.add_argument("--no-check", action="store_true", help="skip check-data's report at the end")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``gemini-pl convert``; returns the exit status (0 ok, 1 problems, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    ct = args.ct_offset if args.ct_offset == "auto" else float(args.ct_offset)
    options = {"ct_offset": ct, "masks": args.masks, "series": args.series, "test_fold": args.test_fold}
    res = convert(args.dataset, args.src, args.root, force=args.force, verify=args.verify, num_test=args.num_test,
                  num_unlabeled=args.num_unlabeled, into=args.into, seed=args.seed, dry_run=args.dry_run,
                  progress=not args.no_progress and sys.stderr.isatty(), **options)
    print(res.render())
    if res.record_path is not None:
        print(f"provenance: {res.record_path}")
    ok = res.ok
    if not args.dry_run and not args.no_check:
        checked = converter(args.into or args.dataset).DATASET
        print(f"\ncheck-data {checked} --data.root {args.root}:")
        report = check_converted(checked, args.root, **options)
        print(report.render())
        ok = ok and report.ok
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
