"""The distribution: its package list, and a non-editable install into a fresh virtual
environment whose console commands run from outside the checkout."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TOOLS = ("train", "demo", "balance", "robustness", "alignment", "longtail")


def test_the_package_list_names_every_package_folder():
  setuptools_cfg = PYPROJECT["tool"]["setuptools"]
  folders = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("mmreg/**/*.py")
             if p.name == "__init__.py"}
  folders |= {"mmreg." + ".".join(p.parent.relative_to(ROOT).parts)
              for p in ROOT.glob("experiments/**/__init__.py")}
  assert set(setuptools_cfg["packages"]) == folders
  assert setuptools_cfg["package-dir"]["mmreg.experiments"] == "experiments"
  assert set(PYPROJECT["project"]["scripts"]) == {f"mmreg-{t}" for t in TOOLS}


def _new_setuptools() -> bool:
  try:
    return int(metadata.version("setuptools").split(".")[0]) >= 77
  except metadata.PackageNotFoundError:
    return False


@pytest.mark.skipif(not _new_setuptools(), reason="building the wheel needs setuptools>=77 "
                    "(installed by the dev extra: `make install`)")
def test_non_editable_install_runs_the_commands_outside_the_checkout(tmp_path):
  source = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
  for name in ("mmreg", "experiments"):
    shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(ROOT / name, source / name)
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
  subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
                  source], check=True, capture_output=True)
  wheel = next((tmp_path / "dist").glob("mmreg-*.whl"))
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
  python = venv / "bin" / "python"
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        check=True, capture_output=True, text=True).stdout.strip()
  # The dependencies come from this interpreter's site-packages (a path entry, so that its
  # .pth files, among them an editable install of this checkout, are not run).
  deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
  Path(site, "deps.pth").write_text("\n".join(sorted(deps)) + "\n")
  subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel],
                 check=True, capture_output=True)

  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["JAX_PLATFORMS"] = "cpu"
  work = tmp_path / "elsewhere"
  work.mkdir()

  def run(*cmd):
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)

  # One interpreter (each start imports JAX): where the package comes from, then every
  # console command's --help.
  helps = run(python, "-c", "import sys; from importlib.metadata import entry_points\n"
              "import mmreg, mmreg.experiments.train as t\n"
              "print('where', mmreg.__file__); print('where', t.CONFIGS)\n"
              "for ep in entry_points(group='console_scripts'):\n"
              "  if ep.name.startswith('mmreg-'):\n"
              "    sys.argv = [ep.name, '--help']\n"
              "    try: ep.load()()\n"
              "    except SystemExit as e: assert e.code == 0, ep.name\n")
  assert helps.returncode == 0, helps.stderr
  where = [line.removeprefix("where ") for line in helps.stdout.splitlines()
           if line.startswith("where ")]
  assert len(where) == 2 and all(path.startswith(site) for path in where), where
  assert helps.stdout.count("  --workdir: ") == len(TOOLS)
  trained = run(venv / "bin" / "mmreg-train", "--config.train.epochs=1",
                "--config.model.hidden=(8,)", "--config.model.feature_dim=4",
                "--config.train.batch_size=256", "--workdir=run")
  assert trained.returncode == 0, trained.stderr
  assert (work / "run" / "results.json").exists() and "test accuracy" in trained.stdout
  bad = run(venv / "bin" / "mmreg-balance", "--methods=joint,nonsense")
  assert bad.returncode == 2
  assert bad.stderr.startswith("mmreg-balance: error: flag --methods") and \
      bad.stderr.count("\n") == 1
