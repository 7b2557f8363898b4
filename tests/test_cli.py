"""The command-line convention of the experiment modules (mmreg.cli): absl flags, --workdir
everywhere, and one error line (exit status 2) for a bad flag, config key or value."""

import importlib
import sys

import pytest

from mmreg import cli

TOOLS = ("train", "demo", "balance", "robustness", "alignment", "longtail")


def _error_line(capsys) -> str:
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  return err


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_takes_workdir_and_rejects_an_unknown_flag(name, capsys, monkeypatch):
  tool = importlib.import_module(f"experiments.{name}")
  monkeypatch.setattr(sys, "argv", [f"mmreg-{name}", "--no_such_flag=1"])
  with pytest.raises(SystemExit) as e:
    tool.cli()
  assert e.value.code == 2
  assert _error_line(capsys) == (f"mmreg-{name}: error: Unknown command line flag "
                                 "'no_such_flag' (see --help)\n")
  with pytest.raises(SystemExit) as e:
    tool.main(["--help"])
  assert e.value.code == 0
  assert "--workdir" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "argv", "message"), [
    ("balance", ["--methods=joint,foo"],
     "--methods takes a comma-separated subset of joint,joint+heads"),
    ("balance", ["--seeds=1"], "flag --seeds=1: 1 is not integer >= 2"),
    ("balance", ["--av_config={oops"], "--av_config is not valid JSON"),
    ("longtail", ["--epochs=many"], "invalid literal for int()"),
    ("robustness", ["--severities=0,loud"], "--severities=0,loud must be comma-separated"),
    ("robustness", ["--teacher=mor"], "--teacher=mor must be one of --views=fou,pix"),
    ("alignment", ["--views=fou,fou"], "--views takes two different views"),
    ("demo", ["surplus"], "unexpected argument(s) ['surplus']"),
    ("train", ["--config.train.epochs=abc"], "--config.train.epochs=abc: invalid literal"),
    ("train", ["--config.train.no_such_field=1"], "the config has no field 'no_such_field'"),
    ("train", ["--config=nowhere.py"], "no such file here, nor among mmreg's configs"),
    ("train", ["--config=audio_visual.py:vggsound"], "unknown audio-visual dataset 'vggsound'"),
    ("train", ["--method_options=[1]"], "--method_options must be a JSON object"),
])
def test_a_bad_value_is_one_error_line(name, argv, message, capsys, monkeypatch):
  tool = importlib.import_module(f"experiments.{name}")
  monkeypatch.setattr(sys, "argv", [f"mmreg-{name}", *argv])
  with pytest.raises(SystemExit) as e:
    tool.cli()
  assert e.value.code == 2
  line = _error_line(capsys)
  assert line.startswith(f"mmreg-{name}: error: ") and message in line, line


def test_an_error_found_while_running_is_one_line(capsys, monkeypatch, tmp_path):
  from experiments import train

  argv = ["mmreg-train", "--config.model.fusion=sideways", f"--workdir={tmp_path / 'run'}"]
  monkeypatch.setattr(sys, "argv", argv)
  with pytest.raises(SystemExit) as e:
    train.cli()
  assert e.value.code == 2
  assert "model.fusion='sideways': unknown fusion" in _error_line(capsys)
  monkeypatch.setenv("MMREG_TRACEBACK", "1")
  with pytest.raises(ValueError, match="unknown fusion"):
    train.cli()


def test_config_names_resolve_to_the_shipped_configs(tmp_path, monkeypatch):
  from experiments import train

  monkeypatch.chdir(tmp_path)
  shipped = train.CONFIGS
  assert cli.packaged_config([], shipped, "default.py") == [f"--config={shipped}/default.py"]
  assert cli.packaged_config(["--config=audio_visual.py:ave", "--x=1"], shipped, "default.py") \
      == [f"--config={shipped}/audio_visual.py:ave", "--x=1"]
  assert cli.packaged_config(["--config", "default.py", "--config.seed=1"], shipped, "x") == [
      f"--config={shipped}/default.py", "--config.seed=1"]
  (tmp_path / "default.py").write_text("")  # a file where the command runs comes first
  assert cli.packaged_config(["--config=default.py"], shipped, "default.py") == [
      "--config=default.py"]


def test_parse_starts_from_the_defaults_each_time():
  from experiments import balance

  assert balance.parse_args(["--max_epochs=3", "--dataset=competition:3"]).max_epochs == 3
  args = balance.parse_args([])
  assert args.max_epochs == 30 and args.datasets == list(balance.DEFAULT_DATASETS)
  assert args.seeds == tuple(range(10)) and args.workdir == "runs/balance"
