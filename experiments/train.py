"""Train one config: `python -m experiments.train --config experiments/configs/default.py
--config.train.epochs=5 --workdir runs/x`. Restarting the same command resumes.

Fields of the config file are overridden as `--config.<path>=value`. Method and dataset
options that the config file does not list are added as JSON:
`--method_options='{"alpha": 0.5}' --data_options='{"imbalance_factor": 50}'`.

Exit codes: 0 done; 1 a problem named in one line on stderr (bad config, data or workdir,
another process training in the workdir, non-finite training); 143 after SIGTERM and 130
after a first SIGINT, once the current step is saved (rerun to resume).
"""

import json
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mmreg.train.checkpoint import CheckpointError
from mmreg.train.loop import (
    NonFiniteError,
    StoppedBySignalError,
    WorkdirConflictError,
    WorkdirLockedError,
    train_and_evaluate,
)

_REPORTED = (ImportError, ValueError, WorkdirConflictError, WorkdirLockedError, CheckpointError,
             NonFiniteError)

try:  # config_flags reads the --config.<key> overrides here, at definition
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/default.py",
                                            "Python config file with get_config().")
except (AttributeError, KeyError) as e:
  key = re.search(r"\w+", str(e)).group()
  flag = next((a.split("=")[0] for a in sys.argv if a.startswith("--config.") and key in a), key)
  hint = re.search(r'Did you mean "(\w+)"', str(e))
  sys.exit(f"error: {flag}: the config has no field {key!r}"
           + (f"; did you mean {hint.group(1)!r}?" if hint else "; see the --config file"))
_WORKDIR = flags.DEFINE_string("workdir", "runs/train", "Output folder (resumes if it holds "
                               "the same run).")
_METHOD_OPTIONS = flags.DEFINE_string("method_options", "{}", "JSON dict merged into "
                                      "config.method.options.")
_DATA_OPTIONS = flags.DEFINE_string("data_options", "{}", "JSON dict merged into "
                                    "config.data.options.")
_TENSORBOARD = flags.DEFINE_bool("tensorboard", False, "Also write the logged scalars as "
                                 "TensorBoard events to <workdir>/tensorboard (needs "
                                 "tensorboardX).")


def _json_dict(flag: str, text: str) -> dict:
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise app.UsageError(f"--{flag} is not valid JSON ({e}); e.g. '{{\"alpha\": 0.5}}'") from e
  if not isinstance(value, dict):
    raise app.UsageError(f"--{flag} must be a JSON object, got {text!r}")
  return value


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  with config.unlocked():
    config.method.options.update(_json_dict("method_options", _METHOD_OPTIONS.value))
    config.data.options.update(_json_dict("data_options", _DATA_OPTIONS.value))
  try:
    results = train_and_evaluate(config, _WORKDIR.value, tensorboard=_TENSORBOARD.value)
  except StoppedBySignalError as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
  except _REPORTED as e:
    sys.exit(f"error: {e}")
  test = results["test"]
  print(f"test accuracy {test['accuracy']:.4f}  macro-F1 {test['macro_f1']:.4f}  "
        f"per modality {test['modality_accuracy']}")
  print(f"output folder: {results['workdir'].absolute()}")


if __name__ == "__main__":
  app.run(main)
