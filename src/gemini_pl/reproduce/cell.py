"""Run one cell of the matrix in this process: ``python -m gemini_pl.reproduce.cell <cell_dir>``.

``<cell_dir>/cell.json`` lists the stages (``{"name", "configs": [<file>, ...], "overrides":
[--key=value, ...], "test": bool, "init_from_stage": <stage> | null}``). Each stage is
``gemini-pl fit --config <file> ... <overrides>`` through the CLI's parser (an unknown or
misspelled key fails the cell with the parser's message naming it); the resolved config is written
to ``<cell_dir>/<stage>.yaml``. A stage whose ``done`` marker exists (an interrupted cell's
pre-training) is not fitted again. The W&B run of a stage (when the budget has a W&B logger) is
named after the row and grouped by the task (``WANDB_NAME``, ``WANDB_RUN_GROUP``, ``WANDB_TAGS``).

The main stage is then tested on its final weights (``select: final``, the default, as the
published code does; a monitored checkpoint of the budget is not used for testing), or with
``select: best`` (``python -m gemini_pl.reproduce --select best``) on the best checkpoint of the
monitored ``val/…`` key — which needs a validation split: a task without one is refused, naming
it. ``tested`` in the result is ``"final weights"`` or that checkpoint's path, ``selection`` the
policy ("final weights" / "best val/seg_dice on N validation cases"). With ``pairs_test`` the
main stage is tested once more on registration pairs (deformation Dice, folding %; Table V). The
result — per-case rows, metric summaries, the split hash and counts, timings — is written
atomically to ``<cell_dir>/result.json``; an error is written there too (``status: failed``) with
its message, and the exit status is 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["run_cell", "parse_stage", "require_validation", "write_json_atomic", "summarise"]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def summarise(values: list[Any]) -> dict[str, float]:
    """mean, sample std, n of the finite values; ``unable``: the non-finite ones."""
    vals = []
    for v in values:
        try:
            vals.append(float(v))
        except (TypeError, ValueError):
            vals.append(math.nan)
    ok = [v for v in vals if math.isfinite(v)]
    mean = sum(ok) / len(ok) if ok else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in ok) / (len(ok) - 1)) if len(ok) > 1 else (0.0 if ok else math.nan)
    return {"mean": mean, "std": std, "n": len(ok), "unable": len(vals) - len(ok)}


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def parse_stage(args: list[str]) -> Any:
    """``GeminiCLI`` of ``gemini-pl fit <args>`` (classes instantiated, nothing run). The parser's
    error (an unknown key, a wrong type, a missing file) becomes a :class:`ConfigError` with its
    message instead of an exit."""
    from ..cli import cli_main
    from ..errors import ConfigError

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(_Tee(sys.stderr, captured)):
            return cli_main(args, run=False)
    except SystemExit as exc:
        text = captured.getvalue()
        i = text.rfind("error:")
        msg = text[i + len("error:"):].strip() if i >= 0 else text.strip()[-1500:]
        noise = ("Given value", "Subtypes:", "Errors:", "Does not validate against any", "- Expected a <class 'NoneType'>")
        msg = " ".join(ln.strip() for ln in msg.splitlines() if ln.strip() and not ln.strip().startswith(noise))
        raise ConfigError(f"{msg or f'the parser exited with status {exc.code}'} (gemini-pl fit {' '.join(args)})") from None


def require_validation(task: str, datamodule: Any) -> None:
    """``select: best`` needs a validation split: refuse it, naming the task, when the data module
    of ``task`` has none (:meth:`~gemini_pl.data.GeminiDataModule.no_validation`)."""
    from ..errors import ConfigError

    check = getattr(datamodule, "no_validation", None)
    reason = check() if check is not None else f"{type(datamodule).__name__} states no validation split"
    if reason:
        raise ConfigError(f"--select best needs a validation split, but task {task} has none: {reason}")


#: the W&B tag of a cell's runs, by its table
_TAGS = {"III": "table3", "VI": "table6"}


def _fit_stage(stage: dict[str, Any], cell_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    import csv

    from lightning.pytorch.callbacks import ModelCheckpoint

    from ..callbacks import ResultsWriter
    from ..callbacks.results import FINAL_WEIGHTS, selection_policy
    from ..data.splits import describe_split
    from .matrix import stage_args

    sdir = cell_dir / stage["name"]
    done = sdir / "done"
    last = sdir / "checkpoints" / "last.ckpt"
    args = stage_args(stage)
    if stage.get("init_from_stage"):
        args += ["--model.init_args.init_from", str(cell_dir / stage["init_from_stage"] / "checkpoints" / "last.ckpt")]
    elif stage.get("init_from"):  # weights from elsewhere (a pre-training cell shared by several cells)
        if not Path(stage["init_from"]).is_file():
            raise FileNotFoundError(f"init_from {stage['init_from']}: no such file (did the pre-training finish?)")
        args += ["--model.init_args.init_from", str(stage["init_from"])]
    info: dict[str, Any] = {"name": stage["name"], "args": args}
    if done.exists() and not stage.get("test"):
        info["skipped"] = "done before"
        return info
    pre = stage["name"] != "main"
    os.environ.update(WANDB_NAME=spec["row"] + (f" {stage['name']}" if pre else ""), WANDB_RUN_GROUP=spec["task"],
                      WANDB_TAGS=_TAGS.get(spec.get("table", "II"), "table2") + (f",{stage['name']}" if pre else ""))
    t0 = time.perf_counter()
    cli = parse_stage(args)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    with contextlib.suppress(Exception):  # provenance only
        (cell_dir / f"{stage['name']}.yaml").write_text(cli.parser.dump(cli.config, skip_none=False))
    writer = next((c for c in trainer.callbacks if isinstance(c, ResultsWriter)), None)
    if writer is not None:
        writer.config = " ".join(args)
    best_wanted = bool(stage.get("test")) and spec.get("select", "final") == "best"
    if best_wanted:
        require_validation(spec["task"], dm)
    flops = None
    if stage.get("count_flops"):  # FLOPs of one real training step (Table IX)
        from .flops import StepFlops

        flops = StepFlops()
        trainer.callbacks.append(flops)
    trainer.fit(model, datamodule=dm)
    if flops is not None:
        info["flops_per_step"] = flops.flops
    info["fit_seconds"] = time.perf_counter() - t0
    info["optimizer_steps"] = int(trainer.global_step)
    info["iterations"] = int(trainer.fit_loop.total_batch_idx + 1)
    info["split"] = getattr(dm, "split_hash", None)
    info["split_summary"] = describe_split(getattr(dm, "split", None), info["split"])
    if not stage.get("test"):
        if not last.exists():
            trainer.save_checkpoint(last)
        done.write_text("ok\n")
        return info
    best = ""
    if best_wanted:
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks
                     if isinstance(c, ModelCheckpoint) and str(c.monitor or "").startswith("val/") and c.best_model_path), "")
        if not best:
            raise RuntimeError("--select best: no best validation checkpoint was written (did validation run? "
                               "see trainer.limit_val_batches and check_val_every_n_epoch of the budget)")
    t1 = time.perf_counter()
    trainer.test(model, datamodule=dm, verbose=False, ckpt_path=best or None)
    info["tested"] = best or FINAL_WEIGHTS
    info["selection"] = selection_policy(trainer, dm)
    info["test_seconds"] = time.perf_counter() - t1
    rows = []
    if writer is not None and writer.csv_path is not None and Path(writer.csv_path).exists():
        with open(writer.csv_path) as f:
            rows = list(csv.DictReader(f))
    info["cases"] = rows
    info["metrics"] = {c: summarise([r.get(c) for r in rows]) for c in ("dice", "avd", "hd95") if rows and c in rows[0]}
    if spec.get("pairs_test"):
        import inspect

        params = inspect.signature(type(dm).__init__).parameters
        hp = {k: v for k, v in dict(dm.hparams).items() if k in params}
        hp["eval_mode"] = "pairs"
        pairs_dm = type(dm)(**hp)
        if writer is not None:
            writer.name = "pairs"
        out = trainer.test(model, datamodule=pairs_dm, verbose=False)
        logged = out[0] if out else {}
        info["pairs_metrics"] = {k.split("/", 1)[-1]: float(v) for k, v in logged.items()}
        info["pairs_cases"] = list(getattr(writer, "rows", []) or []) if writer is not None else []
    return info


def run_cell(cell_dir: str | Path) -> dict[str, Any]:
    cell_dir = Path(cell_dir)
    spec = json.loads((cell_dir / "cell.json").read_text())
    if os.environ.get("GEMINI_REPRODUCE_FAIL") == spec["row"]:  # tests: a cell that fails on purpose, at once
        result = {k: spec[k] for k in ("row", "task", "seed", "table", "key")}
        result.update(status="failed", error=f"RuntimeError: failing on purpose (GEMINI_REPRODUCE_FAIL={spec['row']})", seconds=0.0)
        write_json_atomic(cell_dir / "result.json", result)
        return result
    threads = int(os.environ.get("GEMINI_THREADS", "0") or 0)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    from ..callbacks.results import git_commit

    result: dict[str, Any] = {k: spec[k] for k in ("row", "task", "seed", "table", "key")}
    result.update(select=spec.get("select", "final"), commit=git_commit(), started=time.strftime("%Y-%m-%d %H:%M:%S"),
                  stages=[])
    t0 = time.perf_counter()
    try:
        for stage in spec["stages"]:
            result["stages"].append(_fit_stage(stage, cell_dir, spec))
        main = result["stages"][-1]
        result.update(status="ok", metrics=main.get("metrics", {}), split=main.get("split"),
                      split_summary=main.get("split_summary"), tested=main.get("tested"),
                      selection=main.get("selection"), pairs_metrics=main.get("pairs_metrics"))
    except BaseException as exc:  # noqa: BLE001 - the error goes into the table
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}".strip()[:2000],
                      traceback=traceback.format_exc()[-4000:])
    result["seconds"] = time.perf_counter() - t0
    write_json_atomic(cell_dir / "result.json", result)
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("WANDB_SILENT", "true")
    from ..runtime import keep_freed_memory

    keep_freed_memory()
    result = run_cell(argv[0])
    if result["status"] != "ok":
        print(f"cell {argv[0]} failed: {result['error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
