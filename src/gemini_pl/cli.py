"""The ``gemini-pl`` console script: LightningCLI (fit / validate / test / predict).

Examples::

    gemini-pl fit --config experiments/demo_pretrain.yaml
    gemini-pl fit --config experiments/demo_pretrain.yaml --trainer.precision bf16-mixed
    gemini-pl fit --config experiments/demo_pretrain.yaml --print_config
    gemini-pl fit --config experiments/demo_pretrain.yaml --ckpt_path last

Errors that concern the user's data, config or checkpoints (:class:`~gemini_pl.errors.GeminiError`,
jsonargparse's parse errors, Lightning's misconfigurations) are printed as one line naming the
file, setting or step, with exit status 2; an unwritable or full output folder: 1; SIGTERM during
a run: 143, naming the checkpoint to resume from (:func:`main`, :mod:`gemini_pl.cli_errors`).
``GEMINI_PL_TRACEBACK=1`` keeps the traceback.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import lightning as L
import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning.pytorch.plugins.io import CheckpointIO

from .callbacks import ConfigToLoggers, TrainingCurves, WandbResume
from .callbacks.media_policy import TRAINER_ATTR as MEDIA_ATTR
from .callbacks.wandb_resume import continue_wandb_run
from .checkpoint_io import AtomicCheckpointIO
from .cli_errors import OneLineErrors, instantiation_error, one_line, traceback_wanted
from .configs import resolve_config
from .errors import CheckpointError, ConfigError, GeminiError
from .runtime import keep_freed_memory
from .safe_load import safe_torch_load
from .trainer import Trainer

log = logging.getLogger(__name__)


class GeminiCLI(LightningCLI):
    """LightningCLI with gemini-pl's defaults: any LightningModule / LightningDataModule via
    ``class_path``, optimisers configured by the modules themselves, atomic checkpoint writes
    (:class:`~gemini_pl.checkpoint_io.AtomicCheckpointIO`, unless the config names another
    CheckpointIO plugin) and the W&B run id kept in checkpoints
    (:class:`~gemini_pl.callbacks.WandbResume`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # only the parser of the subcommand given is built in full (the others: listed in --help);
        # building all four took most of the time of a command that stops at a config error
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        self._requested = argv[0] if isinstance(argv, (list, tuple)) and argv and argv[0] in self.subcommands() else None
        super().__init__(*args, **kwargs)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):  # noqa: D102 - LightningCLI hook
        if self._requested is not None and subcommand != self._requested:
            self._subcommand_method_arguments[subcommand] = []
            return self.init_parser(**kwargs)
        return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)

    def parse_arguments(self, parser, args) -> None:  # noqa: D102 - LightningCLI hook
        # presets named by a config file's ``config:`` key become --config files before it (see expand_config_args)
        if args is None:
            argv = sys.argv
            sys.argv = argv[:1]  # parsed as given args below; hidden so that LightningCLI sees one command line
            try:
                expanded = expand_config_args(argv[1:])
                self._explicit = explicit_model_keys(expanded)
                super().parse_arguments(parser, expanded)
            finally:
                sys.argv = argv
        elif isinstance(args, (list, tuple)):
            expanded = expand_config_args(list(args))
            self._explicit = explicit_model_keys(expanded)
            super().parse_arguments(parser, expanded)
        else:  # a dict / Namespace of settings: each model init argument in it is explicit
            section = args.get(args.get("subcommand") or "") if hasattr(args, "get") else None
            model = section.get("model") if hasattr(section, "get") else None
            init = model.get("init_args") if hasattr(model, "get") else None
            self._explicit = set(init.keys()) if hasattr(init, "keys") else set()
            super().parse_arguments(parser, args)

    def init_parser(self, **kwargs):  # noqa: D102 - LightningCLI hook
        # the parsers fill the unset output folders from trainer.default_root_dir (see fill_output_dirs)
        if self.parser_class is LightningArgumentParser:
            self.parser_class = OutputDirsParser
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102 - LightningCLI hook
        # the data contract: stated once, under data; a model without the argument is left alone
        for key in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        parser.add_argument(
            "--log_media", type=Optional[bool], default=None,
            help="send pictures of the data (overlays, warped images) to W&B: true / false; default: only "
                 "for generated data (phantoms, MNI152-derived); data under a use agreement stays local",
        )

    def instantiate_classes(self) -> None:  # noqa: D102 - LightningCLI hook
        config = self.config[self.subcommand] if self.subcommand else self.config
        given = dict((config.get("model") or {}).get("init_args") or {})
        try:
            super().instantiate_classes()
        except Exception as exc:  # a rejected argument: one line naming the key (cli_errors.py)
            err = instantiation_error(exc, config)
            if err is None or err is exc:
                raise
            raise err from exc
        setattr(self.trainer, MEDIA_ATTR, config.get("log_media"))  # see callbacks/media_policy.py
        check_linked_values(given, type(self.model), self.datamodule, getattr(self, "_explicit", set()))
        dims = (getattr(self, "_ckpt_hparams", None) or {}).get("spatial_dims")
        data_dims = getattr(self.datamodule, "spatial_dims", None)
        if dims is not None and data_dims is not None and int(dims) != int(data_dims):
            raise CheckpointError(
                f"{config.get('ckpt_path')} holds a {dims}D {_short(self._ckpt_hparams.get('_class_path'))} but the "
                f"config builds a {data_dims}D one (the data is {data_dims}D): use a checkpoint trained on {data_dims}D data"
            )

    def _parse_ckpt_path(self) -> None:  # noqa: D102 - LightningCLI hook
        # a checkpoint of another module or dimensionality: one line before Lightning swaps the model for it
        sub = self.config.get("subcommand")
        section = self.config.get(sub) if sub else None
        path = section.get("ckpt_path") if section is not None else None
        self._ckpt_hparams = checkpoint_fits(path, section) if path and Path(path).is_file() else {}
        given = _init_args(section)
        super()._parse_ckpt_path()
        # Lightning fills the model's settings from the checkpoint; those the configs or the command
        # line state (a test-time cascade_passes, a new train_cascade_passes on resume) stay as given
        after = _init_args(self.config.get(sub)) if sub else {}
        kept = {k: (after[k], given[k]) for k in sorted(getattr(self, "_explicit", set()))
                if k in given and k in after and after[k] != given[k]}
        for key, (_, value) in kept.items():
            self.config[f"{sub}.model.init_args.{key}"] = value
        if kept:
            changes = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in kept.items())
            log.warning("%s: the model settings given replace the checkpoint's: %s", path, changes)

    def _run_subcommand(self, subcommand: str) -> None:  # noqa: D102 - LightningCLI hook
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        ckpt_path = self.config_init[subcommand].get("ckpt_path")
        if subcommand in ("validate", "test", "predict") and ckpt_path in ("last", "best"):
            require_checkpoint(self.trainer, ckpt_path, subcommand)
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:
            raise Interrupted(f"{subcommand} stopped by SIGTERM at step {self.trainer.global_step}; "
                              + resume_hint(self.trainer)) from None

    def before_fit(self) -> None:  # noqa: D102 - LightningCLI hook
        continue_wandb_run(self.trainer, self.config_init[self.subcommand].get("ckpt_path"))

    def _add_subcommands(self, parser, **kwargs) -> None:  # noqa: D102 - LightningCLI hook
        # the commands that main() runs itself are listed beside fit/validate/test/predict in --help
        super()._add_subcommands(parser, **kwargs)
        action = parser._subcommands_action
        from jsonargparse import ArgumentParser

        for name, (text, _) in EXTRA_COMMANDS.items():
            action.add_subcommand(name, ArgumentParser(description=text), help=text)

    def instantiate_trainer(self, **kwargs):  # noqa: D102 - LightningCLI hook
        config = self._get(self.config_init, "trainer", default={}) or {}
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


#: commands that ``main`` runs itself (not LightningCLI subcommands): name -> (one-line help,
#: "module:function" called with the remaining arguments, returning the exit status); listed in
#: ``gemini-pl --help``
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("Convert a dataset's official download into the canonical layout (DATASET --src DIR --root DIR)",
                "gemini_pl.data.convert:main"),
    "check-data": ("Check a dataset's files, split and labels before training (--config FILE --data.root DIR)",
                   "gemini_pl.data.check:main"),
    "register": ("Register your own images with a trained deformer (--fixed F --moving M --ckpt C --out DIR)",
                 "gemini_pl.apps.register:main"),
    "segment": ("Segment your own images with a trained segmentation head (--ckpt C --input DIR_OR_FILES --out DIR)",
                "gemini_pl.apps.segment:main"),
}

#: data-module properties that LightningCLI links to the model's arguments of the same name
LINKED_FROM_DATA = ("spatial_dims", "num_classes", "label_kind")


def check_linked_values(given: dict[str, Any], model_class: type, datamodule: Any,
                        explicit: set[str] | frozenset[str] = frozenset()) -> None:
    """Refuse a model value of a linked argument that the config set to something other than the
    data's (the link would otherwise replace it silently). ``explicit``: the model keys a config
    file or the command line gave (checked whatever their value; other keys only when they differ
    from the class default, which the parser fills in)."""
    for key in LINKED_FROM_DATA:
        value = given.get(key)
        data_value = getattr(datamodule, key, None) if datamodule is not None else None
        if value is None or data_value is None:
            continue
        if key not in explicit and value == init_defaults(model_class).get(key, inspect.Parameter.empty):
            continue
        if value != data_value and not (key == "label_kind" and value == "auto"):
            raise ConfigError(
                f"model.init_args.{key}={value!r} but the data gives {key}={data_value!r}; "
                f"{key} is taken from the data: drop it from the model's config or set data.init_args.{key}"
            )


def explicit_model_keys(args: list[str]) -> set[str]:
    """The ``model`` init arguments that the command line (``--model.init_args.KEY``,
    ``--model.KEY``) or a config file (``model: {init_args: {KEY: ...}}``) of ``args`` sets."""
    keys: set[str] = set()
    i = 0
    while i < len(args):
        arg = str(args[i])
        if arg in ("-c", "--config") and i + 1 < len(args) or arg.startswith("--config="):
            path = arg.split("=", 1)[1] if arg.startswith("--config=") else args[i + 1]
            try:
                data = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                data = None
            model = data.get("model") if isinstance(data, dict) else None
            init = model.get("init_args") if isinstance(model, dict) else None
            if isinstance(init, dict):
                keys |= set(init)
            i += 1 if arg.startswith("--config=") else 2
            continue
        if arg.startswith("--model."):
            name = arg[len("--model."):].split("=", 1)[0]
            name = name[len("init_args."):] if name.startswith("init_args.") else name
            if "." not in name:
                keys.add(name)
        i += 1
    return keys


class Interrupted(GeminiError):
    """A run stopped by a signal (exit status 128 + SIGTERM)."""

    exit_code = 143


def _init_args(section: Any) -> dict[str, Any]:
    """The model's init arguments in a parsed config section (``{}`` when it has none)."""
    model = section.get("model") if hasattr(section, "get") else None
    init = model.get("init_args") if hasattr(model, "get") else None
    return dict(vars(init)) if init is not None and hasattr(init, "__dict__") else dict(init or {})


def _short(class_path: Any) -> str:
    return str(class_path or "module").rpartition(".")[2]


def checkpoint_fits(path: str, section: Any) -> dict[str, Any]:
    """The hyper-parameters of checkpoint ``path``; CheckpointError when it holds another module
    class or dimensionality than the config ``section`` builds (one line saying both)."""
    ckpt = safe_torch_load(path, mmap=True)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict): give a .ckpt written by gemini-pl fit")
    hp = dict(ckpt.get("hyper_parameters") or {})
    model = section.get("model") if hasattr(section, "get") else None
    built = model.get("class_path") if hasattr(model, "get") else None
    held = hp.get("_class_path")
    dims = hp.get("spatial_dims")
    held_text = f"a {dims}D {_short(held)}" if dims else f"a {_short(held)}"
    if held and built and held != built:
        raise CheckpointError(f"{path} holds {held_text} ({held}) but the config builds a {built}: "
                              "give a checkpoint of that module or the config it was trained with")
    data = section.get("data") if hasattr(section, "get") else None
    init = data.get("init_args") if hasattr(data, "get") else None
    want = init.get("spatial_dims") if hasattr(init, "get") else None
    if dims is not None and want is not None and int(dims) != int(want):
        raise CheckpointError(f"{path} holds {held_text} but the config builds a {want}D one "
                              f"(data.init_args.spatial_dims={want}): use a checkpoint trained on {want}D data")
    return hp


def require_checkpoint(trainer: Any, which: str, subcommand: str) -> None:
    """``--ckpt_path last`` (or ``best``) of an evaluation: ConfigError when there is none (Lightning
    would warn and evaluate the untrained weights)."""
    found: set = set()
    dirs = []
    for cb in trainer.checkpoint_callbacks:
        dirs.append(str(cb.dirpath))
        if which == "last":
            found |= set(cb._find_last_checkpoints(trainer))
        elif getattr(cb, "best_model_path", ""):
            found.add(cb.best_model_path)
    if not found:
        where = ", ".join(d for d in dirs if d != "None") or "no checkpoint folder (no ModelCheckpoint callback)"
        raise ConfigError(
            f"{subcommand} --ckpt_path {which}: no {which} checkpoint in {where}; give the checkpoint file "
            "(--ckpt_path path/to/file.ckpt)" + (" (best: only known within the fit run)" if which == "best" else "")
        )


def resume_hint(trainer: Any) -> str:
    """Where a stopped run can resume from (the newest checkpoint written), for its error line."""
    paths = []
    for cb in getattr(trainer, "checkpoint_callbacks", []):
        paths += [p for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")) if p]
        paths += [str(p) for p in cb._find_last_checkpoints(trainer)] if cb.dirpath else []
    paths = [p for p in dict.fromkeys(paths) if Path(p).is_file()]
    if not paths:
        return "no checkpoint was written yet: rerun the same command to start again"
    newest = max(paths, key=lambda p: Path(p).stat().st_mtime)
    return f"resume with the same command and --ckpt_path {newest}"


def cli_main(args: list[str] | None = None, run: bool = True) -> GeminiCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (tests, the demo and
    Table II cells run stages in-process this way; the caller's own command line is hidden from
    ``sys.argv`` meanwhile, so that LightningCLI does not see two command lines)."""
    argv = sys.argv
    if args is not None:
        sys.argv = sys.argv[:1]
    try:
        return GeminiCLI(
            model_class=L.LightningModule,
            datamodule_class=L.LightningDataModule,
            trainer_class=Trainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [WandbResume(), TrainingCurves()]},
            save_config_callback=ConfigToLoggers,
            args=args,
            run=run,
        )
    finally:
        sys.argv = argv


# ---------------------------------------------------------------- composing configs from presets
def config_presets(path: str | os.PathLike, _seen: frozenset[str] = frozenset()) -> list[str]:
    """The preset files that a config file names in its top-level ``config:`` key (a path or a list
    of paths, relative to the file's folder), each preceded by its own presets, in order.

    An experiment file starts with, e.g., ``config: [trainer/default.yaml, logger/wandb.yaml]``;
    :func:`expand_config_args` turns ``--config experiment.yaml`` into ``--config <each preset>
    --config experiment.yaml``: LightningCLI's own several-config-files mechanism (later files
    override earlier ones key by key; a list such as ``trainer.callbacks`` is replaced, unless a
    later file appends to it with ``callbacks+:``). (jsonargparse's own handling of a ``config:``
    key inside a file loses the included file's values of every section that the including file
    also has, hence the expansion.)
    """
    p = Path(path)
    if not p.is_file():
        return []
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:  # one line naming the file and the place
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict) or not data.get("config"):
        return []
    names = data["config"]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: config: must be a path or a list of paths of config files, got {names!r}")
    out: list[str] = []
    for name in names:
        inc = os.path.normpath(os.path.join(p.parent, name))
        if inc in _seen or os.path.normpath(p) == inc:
            raise ConfigError(f"{path}: config: {name} includes itself")
        if not Path(inc).is_file():
            raise ConfigError(f"{path}: config: {name} not found (looked for {inc})")
        out += [*config_presets(inc, _seen | {os.path.normpath(p)}), inc]
    return out


def expand_config_args(args: list[str]) -> list[str]:
    """``--config FILE`` (or ``-c``, ``--config=FILE``) preceded by ``--config P`` for each preset
    ``P`` of :func:`config_presets`; every other argument as given. A ``FILE`` that is not in the
    working directory is looked up among the shipped experiment configs
    (:func:`gemini_pl.configs.resolve_config`)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "--config") and i + 1 < len(args):
            path = resolve_config(args[i + 1])  # the working directory, else the shipped configs
            for preset in config_presets(path):
                out += [arg, preset]
            out += [arg, path]
            i += 2
            continue
        if isinstance(arg, str) and arg.startswith("--config="):
            path = resolve_config(arg.split("=", 1)[1])
            for preset in config_presets(path):
                out += ["--config", preset]
            arg = f"--config={path}"
        out.append(arg)
        i += 1
    return out


# ---------------------------------------------------------------- one output folder
#: init arguments that name an output folder, and where under the run's folder they go when unset
LOGGER_DIRS = {"save_dir": ""}
CALLBACK_DIRS = {"dirpath": "checkpoints", "results_dir": "results", "output_dir": "predictions"}


def _init_defaults(class_path: str) -> dict[str, object]:
    """:func:`init_defaults` of the class named by ``class_path`` (``{}`` when it cannot be imported)."""
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return {}
    return init_defaults(cls)


def init_defaults(cls: type) -> dict[str, object]:
    """Parameters of a class's ``__init__`` chain (following ``**kwargs`` to the parents) and their
    defaults (``inspect.Parameter.empty``: none); the first declaration of a name wins."""
    out: dict[str, object] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            break
        for p, v in params.items():
            if p != "self" and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY):
                out.setdefault(p, v.default)
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            break
    return out


def _items(value: object) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def fill_output_dirs(config) -> str:
    """Put every output of a run under its one folder, ``trainer.default_root_dir`` (default ``.``).

    Each logger's ``save_dir``, each checkpoint callback's ``dirpath`` (``<root>/checkpoints``), a
    results writer's ``results_dir`` (``<root>/results``) and a prediction writer's ``output_dir``
    (``<root>/predictions``) that the config leaves unset (``null`` or the class's default) is set;
    a value given in a config or on the command line is kept. A W&B logger without a ``name`` is
    named after the folder (unless ``WANDB_NAME`` is set). Works on the parsed (not yet
    instantiated) config, in place; returns the folder.
    """
    trainer = config.get("trainer") if config is not None else None
    if trainer is None:
        return "."
    root = str(trainer.get("default_root_dir") or ".")
    for key, dirs in (("logger", LOGGER_DIRS), ("callbacks", CALLBACK_DIRS)):
        for item in _items(trainer.get(key)):
            class_path = item.get("class_path") if hasattr(item, "get") else None
            if not isinstance(class_path, str):
                continue
            if item.get("init_args") is None:
                item["init_args"] = type(item)()
            init = item["init_args"]
            defaults = _init_defaults(class_path)
            for arg, sub in dirs.items():
                if arg not in defaults:
                    continue
                value = init.get(arg)
                if value is None or value == defaults[arg]:
                    init[arg] = os.path.join(root, sub) if sub else root
            if key == "logger" and "Wandb" in class_path and "name" in defaults and init.get("name") is None \
                    and not os.environ.get("WANDB_NAME") and root != ".":
                init["name"] = Path(root).name
    return root


class OutputDirsParser(OneLineErrors, LightningArgumentParser):
    """The parser of :class:`GeminiCLI`: before it checks a parsed config, it fills the output folders
    that the config leaves unset (:func:`fill_output_dirs`), so that e.g. a ``CSVLogger`` needs no
    ``save_dir`` of its own. (``--print_config`` prints the config before this step.)"""

    def validate(self, namespace, *args, **kwargs):  # noqa: D102 - jsonargparse
        sub = namespace.get("subcommand") if hasattr(namespace, "get") else None
        section = namespace.get(sub) if isinstance(sub, str) else namespace
        if hasattr(section, "get") and section.get("trainer") is not None:
            fill_output_dirs(section)
        return super().validate(namespace, *args, **kwargs)


def _ckpt_path_arg(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return None


def check_checkpoint_file(path: str | None) -> None:
    """Refuse a checkpoint that cannot be read with ``weights_only=True`` before anything loads it
    (LightningCLI reads its hyper-parameters while parsing)."""
    if not path or path in ("last", "best", "hpc", "registry") or not Path(path).is_file():
        return
    safe_torch_load(path, mmap=True)


def main(args: list[str] | None = None) -> None:
    """Console entry point. An error that is the user's to fix (a gemini-pl error, a config mistake,
    a full or read-only output folder, a bad file read in a DataLoader worker) is printed as one
    line ``gemini-pl: error: ...`` and exits non-zero (2; 1 for output-folder errors; 143 after
    SIGTERM); ``GEMINI_PL_TRACEBACK=1`` keeps the traceback."""
    os.environ.setdefault("WANDB_SILENT", "true")
    keep_freed_memory()  # CPU: reuse freed buffers instead of page-faulting fresh ones (runtime.py)
    argv = sys.argv[1:] if args is None else list(args)
    prog = "gemini-pl"
    try:
        if argv and argv[0] in EXTRA_COMMANDS:  # e.g. gemini-pl check-data --config ... (gemini_pl.data.check)
            import importlib

            prog = f"gemini-pl {argv[0]}"
            module, _, func = EXTRA_COMMANDS[argv[0]][1].partition(":")
            code = getattr(importlib.import_module(module), func)(argv[1:])
        else:
            check_checkpoint_file(_ckpt_path_arg(argv))
            cli_main(args)
            return
    except Exception as exc:
        found = None if traceback_wanted() else one_line(exc)
        if found is None:
            raise
        print(f"{prog}: error: {found[0]}", file=sys.stderr)
        sys.exit(found[1])
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
