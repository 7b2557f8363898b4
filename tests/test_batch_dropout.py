"""Whole-batch modality dropout of RedReg's recipe, against the authors' schedule and draw.

Source: xia-zhe/RedReg, main_RedReg.py:108-114 (rate) and :168-182 (draw).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.redreg import get_config as redreg_recipe
from mmreg.data.batch import PRESENT
from mmreg.data.batch_dropout import drop_one_modality, dropout_rate, with_modality_dropout
from mmreg.train.loop import train_and_evaluate
from tests.conftest import tiny_config


def authors_rate(epoch, epochs):
  p_start, p_end, warm_phase = 0.6, 0.1, 0.3  # :108
  phase_ep = max(1, int(epochs * warm_phase))  # :110
  ratio = min(1.0, epoch / phase_ep)  # :111
  return p_start + (p_end - p_start) * ratio  # :112


def authors_drop(u, p):
  """(drop_a, drop_v) for one uniform draw u (:169-171)."""
  return u < p * 0.5, (u >= p * 0.5) and (u < p)


@pytest.mark.parametrize("epochs", [1, 5, 10, 80])
def test_rate_follows_the_authors_schedule(epochs):
  for epoch in range(epochs):
    np.testing.assert_allclose(dropout_rate(epoch, epochs), authors_rate(epoch, epochs),
                               rtol=1e-6)


DROP = jax.jit(drop_one_modality)


def _batch(n=6, present=None):
  batch = {"a": jnp.ones((n, 3)), "v": jnp.ones((n, 2)), "label": jnp.zeros((n,), jnp.int32)}
  if present is not None:
    batch[PRESENT] = present
  return batch


def test_one_draw_drops_one_modality_for_the_whole_batch():
  counts = np.zeros(3)
  for i in range(200):
    key = jax.random.PRNGKey(i)
    u = float(jax.random.uniform(key))
    out = DROP(key, _batch(), 0.6)
    expected = authors_drop(u, 0.6)
    for name, dropped in zip(("a", "v"), expected, strict=True):
      np.testing.assert_array_equal(out[PRESENT][name], not dropped)
    np.testing.assert_array_equal(out["a"], 1.0)  # the inputs themselves are left alone
    counts[0 if expected[0] else 1 if expected[1] else 2] += 1
  np.testing.assert_allclose(counts / 200, [0.3, 0.3, 0.4], atol=0.1)


def test_rate_zero_keeps_everything_and_no_sample_loses_all_modalities():
  out = drop_one_modality(jax.random.PRNGKey(0), _batch(), 0.0)
  assert all(bool(jnp.all(out[PRESENT][m])) for m in "av")
  present = {"a": jnp.asarray([True, False, True, True, True, True]),
             "v": jnp.asarray([False, True, True, True, True, True])}
  for i in range(10):
    out = DROP(jax.random.PRNGKey(i), _batch(present=present), 1.0)
    kept = np.stack([np.asarray(out[PRESENT][m]) for m in "av"])
    assert kept.any(axis=0).all()


class _State:
  def __init__(self, step):
    self.step = jnp.asarray(step)


def test_wrapper_uses_the_epoch_rate_and_a_resumable_key():
  seen = []
  step = with_modality_dropout(lambda s, b: (s, b[PRESENT]), steps_per_epoch=10,
                               total_epochs=10, seed=3)
  for t in range(60):
    _, present = step(_State(t), _batch())
    seen.append([bool(present[m][0]) for m in "av"])
  again = [[bool(p[m][0]) for m in "av"] for p in
           (step(_State(t), _batch())[1] for t in (7, 42))]
  assert again == [seen[7], seen[42]]  # the draw depends on (seed, step) only
  first, late = np.array(seen[:10]), np.array(seen[30:])
  assert (~first).any(1).mean() > 2 * (~late).any(1).mean()  # p = 0.6 in epoch 0, 0.1 from 3
  with pytest.raises(ValueError, match="warm_fraction"):
    with_modality_dropout(lambda s, b: None, steps_per_epoch=1, total_epochs=1,
                          warm_fraction=0.0)
  with pytest.raises(ValueError, match="modality_dropout.start"):
    with_modality_dropout(lambda s, b: None, steps_per_epoch=1, total_epochs=1, start=1.5)


def test_redreg_recipe_config_and_the_loop_hook(tmp_path):
  recipe = redreg_recipe()
  assert recipe.method.name == "redreg" and recipe.train.epochs == 80
  assert recipe.train.batch_size == 64 and recipe.optim.learning_rate == 2e-3
  assert tuple(recipe.optim.decay_epochs) == (40,) and recipe.optim.weight_decay == 1e-4
  assert dict(recipe.train.modality_dropout) == {"start": 0.6, "end": 0.1, "warm_fraction": 0.3}
  with pytest.raises(ValueError, match="unknown dataset"):
    redreg_recipe("mnist")
  cfg = tiny_config(epochs=1)
  cfg.method.name = "redreg"
  cfg.train.modality_dropout = dict(recipe.train.modality_dropout)
  results = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert results["steps"] > 0 and np.isfinite(results["final_val"]["accuracy"])
  cfg.train.modality_dropout = {"start": 2.0}
  with pytest.raises(ValueError, match="modality_dropout.start"):
    train_and_evaluate(cfg, tmp_path / "bad", progress=False)
