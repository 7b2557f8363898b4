"""Train one config: `mmreg-train --config=default.py --config.train.epochs=5 --workdir=runs/x`
(in a checkout also `python -m experiments.train --config=experiments/configs/default.py ...`).
Restarting the same command resumes.

`--config` is a Python config file with get_config(); a file name that does not exist where the
command runs is read from the configs shipped with mmreg (default.py, audio_visual.py:<dataset>).
Fields of the config are overridden as `--config.<path>=value`. Method and dataset options that
the config file does not list are added as JSON:
`--method_options='{"alpha": 0.5}' --data_options='{"imbalance_factor": 50}'`.

Exit codes: 0 done; 2 a problem named in one line on stderr (bad flag, config, data or workdir,
another process training in the workdir, non-finite training); 143 after SIGTERM and 130 after
a first SIGINT, once the current step is saved (rerun to resume).
"""

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import flags, logging
from ml_collections import config_flags

from mmreg import cli as cli_lib
from mmreg.train.checkpoint import CheckpointError
from mmreg.train.loop import (
    NonFiniteError,
    StoppedBySignalError,
    WorkdirConflictError,
    WorkdirLockedError,
    train_and_evaluate,
)

# Problems reported in one line (ValueError covers bad config values and data).
_REPORTED = (ImportError, WorkdirConflictError, WorkdirLockedError, CheckpointError,
             NonFiniteError)

CONFIGS = Path(__file__).parent / "configs"
FLAGS = flags.FlagValues()
_ARGV: list[str] = []  # the arguments being parsed, where the config flag reads its overrides
_CONFIG = config_flags.DEFINE_config_file("config", str(CONFIGS / "default.py"),
                                          "Python config file with get_config().",
                                          flag_values=FLAGS, sys_argv=_ARGV)
_WORKDIR = cli_lib.define_workdir(FLAGS, "runs/train", "Output folder (resumes if it holds "
                                  "the same run).")
_METHOD_OPTIONS = flags.DEFINE_string("method_options", "{}", "JSON dict merged into "
                                      "config.method.options.", flag_values=FLAGS)
_DATA_OPTIONS = flags.DEFINE_string("data_options", "{}", "JSON dict merged into "
                                    "config.data.options.", flag_values=FLAGS)
_TENSORBOARD = flags.DEFINE_bool("tensorboard", False, "Also write the logged scalars as "
                                 "TensorBoard events to <workdir>/tensorboard (needs "
                                 "tensorboardX).", flag_values=FLAGS)


def _json_dict(flag: str, text: str) -> dict:
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    cli_lib.fail(f"--{flag} is not valid JSON ({e}); e.g. '{{\"alpha\": 0.5}}'")
  if not isinstance(value, dict):
    cli_lib.fail(f"--{flag} must be a JSON object, got {text!r}")
  return value


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  cli_lib.parse(FLAGS, cli_lib.packaged_config(argv, CONFIGS, "default.py"), __doc__, _ARGV)
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  with config.unlocked():
    config.method.options.update(_json_dict("method_options", _METHOD_OPTIONS.value))
    config.data.options.update(_json_dict("data_options", _DATA_OPTIONS.value))
  try:
    results = train_and_evaluate(config, _WORKDIR.value, tensorboard=_TENSORBOARD.value)
  except StoppedBySignalError as e:
    print(e, file=sys.stderr)
    raise SystemExit(e.exit_code) from None
  except _REPORTED as e:
    cli_lib.fail(" ".join(str(e).split()))
  test = results["test"]
  print(f"test accuracy {test['accuracy']:.4f}  macro-F1 {test['macro_f1']:.4f}  "
        f"per modality {test['modality_accuracy']}")
  print(f"output folder: {results['workdir'].absolute()}")
  return results


def cli() -> None:
  """The `mmreg-train` command."""
  cli_lib.run(main)


if __name__ == "__main__":
  cli()
