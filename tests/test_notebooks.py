"""Every notebook is committed executed (top to bottom, with its outputs) and runs from
notebooks/, as Jupyter starts it, with only the `mmreg` package importable (short settings)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
  assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"][:len(NOTEBOOKS)]
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed(path):
  cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
  assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), (
      f"{path.name}: run it top to bottom in a fresh kernel and save it with its outputs")
  errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
  assert not errors, f"{path.name} was saved with an error: {errors[0].ename}"
  assert any(c.outputs for c in cells), f"{path.name} was saved without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_the_notebooks_folder(path, tmp_path, monkeypatch):
  # As after `pip install mmreg`: the package is importable, the checkout's other folders
  # (experiments/, benchmarks/) are not.
  site = tmp_path / "site"
  site.mkdir()
  (site / "mmreg").symlink_to(ROOT / "mmreg")
  monkeypatch.setenv("PYTHONPATH", str(site))
  monkeypatch.setenv("MMREG_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("MMREG_NOTEBOOK_OUT", str(tmp_path / "out"))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.delenv("PYTHONSTARTUP", raising=False)
  before = sorted(os.listdir(path.parent))
  nb = nbformat.read(path, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(path.parent)}}).execute()
  assert sorted(os.listdir(path.parent)) == before, "the notebook wrote into notebooks/"
