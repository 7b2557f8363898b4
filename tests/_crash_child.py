"""Runs `experiments.train`, optionally SIGKILLing itself inside the Nth checkpoint commit.

Usage: python tests/_crash_child.py KILL_AT_COMMIT [experiments.train flags...]
KILL_AT_COMMIT = 0 runs normally. Otherwise the process kills itself when orbax is about to
finalize (rename/commit) a temporary checkpoint folder for the Nth time: the data files are
written but the checkpoint is not complete, as in a crash during a checkpoint write.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from orbax.checkpoint._src.path import atomicity

kill_at = int(sys.argv.pop(1))
calls = 0


def _patch(cls):
  original = cls.finalize

  async def finalize(self, *args, **kwargs):
    global calls
    calls += 1
    if calls == kill_at:
      os.kill(os.getpid(), signal.SIGKILL)
    return await original(self, *args, **kwargs)

  cls.finalize = finalize


for name in ("AtomicRenameTemporaryPath", "CommitFileTemporaryPath"):
  if hasattr(atomicity, name):
    _patch(getattr(atomicity, name))

from experiments import train  # noqa: E402

train.cli()
