"""What a new user trips on: one-line argument errors, the command list in --help, configs found
from any working directory (and in a built wheel), `make clean` keeping trained runs."""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gemini_pl.cli import EXTRA_COMMANDS, expand_config_args, main
from gemini_pl.configs import resolve_config

REPO = Path(__file__).resolve().parents[1]


def test_invalid_model_argument_is_one_line_naming_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(REPO / "experiments/demo_pretrain.yaml"),
              "--model.init_args.widths", "[8, 16, 32, 64, 100, 64, 32, 16, 8]",
              "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gemini-pl: error")]
    assert len(err) == 1
    assert err[0].startswith("gemini-pl: error: model.init_args.widths: backbone widths must be multiples of 8")
    assert "Traceback" not in capsys.readouterr().err


def test_help_lists_the_extra_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in ("fit", "test", *EXTRA_COMMANDS):
        assert name in out
    assert "check-data" in EXTRA_COMMANDS


def test_configs_resolve_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = expand_config_args(["fit", "--config", "experiments/demo_pretrain.yaml", "--trainer.max_steps", "1"])
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    # the presets of demo_pretrain.yaml, then the file itself, all found
    assert [Path(c).name for c in configs] == ["cpu.yaml", "wandb.yaml", "default.yaml", "best_reg.yaml",
                                               "demo_pretrain.yaml"]
    assert all(Path(c).is_file() for c in configs)
    assert Path(configs[-1]).read_bytes() == (REPO / "experiments/demo_pretrain.yaml").read_bytes()
    assert args[-2:] == ["--trainer.max_steps", "1"]
    # a file of the working directory wins over the shipped one; unknown names are left as given
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo_pretrain.yaml").write_text("seed_everything: 1\n")
    assert resolve_config("experiments/demo_pretrain.yaml") == "experiments/demo_pretrain.yaml"
    assert resolve_config("experiments/nope.yaml") == "experiments/nope.yaml"


@pytest.mark.slow
def test_a_built_wheel_ships_the_configs(tmp_path):
    """`pip install .` (a wheel, not editable) carries experiments/ as gemini_pl/experiments, and
    the installed package resolves --config experiments/... to it from another directory."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), str(REPO)], check=True, cwd=tmp_path)
    wheel = glob.glob(str(tmp_path / "wheel" / "*.whl"))[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"gemini_pl/experiments/{p.relative_to(REPO / 'experiments')}"
               for p in (REPO / "experiments").rglob("*") if p.suffix in (".yaml", ".md")}
    assert shipped <= names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import gemini_pl.configs as c; from gemini_pl.cli import expand_config_args as e; "
            "print(c.__file__); print(e(['--config', 'experiments/demo/pretrain.yaml'])[-1])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out[0].startswith(str(target))
    assert out[1] == str(target / "gemini_pl" / "experiments" / "demo" / "pretrain.yaml")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_keeps_trained_runs(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "runs" / "exp" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "exp" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "data" / "phantom2d").mkdir(parents=True)

    def make(target, answer=""):
        return subprocess.run(["make", "-s", target], cwd=tmp_path, input=answer, text=True,
                              capture_output=True, check=True).stdout

    assert "kept runs/" in make("clean")
    assert (tmp_path / "runs" / "exp" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "data" / "phantom2d").exists()
    assert "kept runs/" in make("clean-runs", "n\n")
    assert (tmp_path / "runs").is_dir()
    assert "deleted runs/" in make("clean-runs", "y\n")
    assert not (tmp_path / "runs").exists()
