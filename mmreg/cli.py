"""The command-line convention of mmreg's tools (`mmreg-train`, `mmreg-balance`, ...).

Each tool defines absl flags on its own `flags.FlagValues` (so that several tools can be
imported into one process), writes everything under `--workdir`, and exposes two functions:
`main(argv) -> results` for Python callers and `cli()`, the console entry point. A bad flag,
config key or value ends the command with one line on stderr, `<tool>: error: <problem>`;
set MMREG_TRACEBACK=1 to see the traceback of a `ValueError` raised while running.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

from absl import flags

HELP_FLAGS = ("-h", "--help", "-?", "--helpshort", "--helpfull")


def fail(message: str, prog: str | None = None) -> NoReturn:
  """Ends the command with `<prog>: error: <message>` on stderr and exit status 2."""
  prog = prog or Path(sys.argv[0]).name
  print(f"{prog}: error: {message}", file=sys.stderr)
  raise SystemExit(2)


def parse(flag_values: flags.FlagValues, argv: Sequence[str] | None, doc: str,
          config_argv: list[str] | None = None) -> SimpleNamespace:
  """Parses `argv` (the arguments after the program name; `sys.argv[1:]` when None) into
  `flag_values`, starting from the defaults, and returns the values by flag name. `--help`
  prints `doc` and the flags, then exits.

  `config_argv` is the list given as `sys_argv` to `config_flags.DEFINE_config_file`: it is
  filled with `argv` first, as the config flag reads its `--config.<field>` overrides there
  (and registers a flag for each, which is dropped before the next parse).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  prog = Path(sys.argv[0]).name
  if any(a in HELP_FLAGS for a in argv):
    print(f"{doc.strip()}\n\nFlags:\n{flag_values.get_help(include_special_flags=False)}")
    raise SystemExit(0)
  if config_argv is not None:
    config_argv[:] = [prog, *argv]
    for name in [n for n in flag_values if n.startswith("config.")]:  # an earlier parse's
      delattr(flag_values, name)
  flag_values.unparse_flags()
  try:
    rest = flag_values([prog, *argv])
  except (KeyError, AttributeError) as e:  # a --config.<field> the config does not have
    message = str(e.args[0] if e.args else e)
    hint = re.search(r'Did you mean "(\w+)"', message)
    field = (re.search(r"\w+", message) or re.search(r".*", message)).group()
    fail(f"the config has no field {field!r}"
         + (f"; did you mean {hint.group(1)!r}?" if hint else " (see --help)"), prog)
  except Exception as e:  # any failure to parse a flag is a usage error
    message = str(e)
    if "Traceback (most recent call last)" in message:  # a config file's get_config() failed
      message = message.split("Traceback")[0] + message.strip().splitlines()[-1]
    fail(" ".join(message.split()) + " (see --help)", prog)
  if len(rest) > 1:
    fail(f"unexpected argument(s) {rest[1:]}; flags are written --name=value (see --help)", prog)
  return SimpleNamespace(**flag_values.flag_values_dict())


def define_workdir(flag_values: flags.FlagValues, default: str, help_text: str
                   ) -> flags.FlagHolder[str]:
  """The `--workdir` flag every tool takes: the folder its results, plots and logs go to."""
  return flags.DEFINE_string("workdir", default, help_text, flag_values=flag_values)


def define_choices(flag_values: flags.FlagValues, name: str, default: Sequence[str],
                   choices: Sequence[str], help_text: str) -> flags.FlagHolder[list[str]]:
  """A comma-separated list flag whose items must be among `choices`."""
  holder = flags.DEFINE_list(name, list(default), f"{help_text} Comma-separated subset of "
                             f"{','.join(choices)}.", flag_values=flag_values)
  flags.register_validator(
      name, lambda items: not set(items) - set(choices),
      message=f"--{name} takes a comma-separated subset of {','.join(choices)}",
      flag_values=flag_values)
  return holder


def define_view_pair(flag_values: flags.FlagValues, default: Sequence[str],
                     views: Sequence[str], help_text: str) -> flags.FlagHolder[list[str]]:
  """A `--views` flag naming two different items of `views`, comma-separated."""
  holder = define_choices(flag_values, "views", default, views, help_text)
  flags.register_validator("views", lambda v: len(set(v)) == 2,
                           message="--views takes two different views, e.g. --views=fou,pix",
                           flag_values=flag_values)
  return holder


def float_list(flag_values: flags.FlagValues, name: str) -> list[float]:
  """The values of a comma-separated list flag as floats (one error line if one is not)."""
  try:
    return [float(x) for x in flag_values[name].value]
  except ValueError:
    fail(f"--{name}={','.join(flag_values[name].value)} must be comma-separated numbers, "
         f"e.g. --{name}=0,0.5,1")


def run(main: Callable[[Sequence[str] | None], Any]) -> None:
  """Runs `main(sys.argv[1:])` as a console command: a `ValueError` (bad input found while
  running, e.g. an unknown config value) becomes one error line instead of a traceback."""
  try:
    main(None)
  except ValueError as e:
    if os.environ.get("MMREG_TRACEBACK") == "1":
      raise
    fail(" ".join(str(e).split()))


def packaged_config(argv: Sequence[str] | None, folder: Path, default: str) -> list[str]:
  """`argv` with its `--config=<file>[:arg]` read from `folder` (the configs shipped with
  mmreg) when no such file exists where the command runs, and `--config=<folder>/<default>`
  first when `argv` names no config."""
  argv = list(sys.argv[1:] if argv is None else argv)
  for i in range(len(argv) - 1):  # `--config <file>` as `--config=<file>`
    if argv[i] == "--config":
      argv[i:i + 2] = [f"--config={argv[i + 1]}"]
      break
  given = [i for i, a in enumerate(argv) if a.startswith("--config=")]
  for i in given:
    path, sep, rest = argv[i].removeprefix("--config=").partition(":")
    if Path(path).exists():
      continue
    if not (folder / Path(path).name).exists():
      shipped = sorted(p.name for p in folder.glob("*.py") if not p.name.startswith("_"))
      fail(f"--config={path}: no such file here, nor among mmreg's configs {shipped}")
    argv[i] = f"--config={folder / Path(path).name}{sep}{rest}"
  return argv if given else [f"--config={folder / default}", *argv]
