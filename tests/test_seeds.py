"""Seeds trained together under jax.vmap equal the same seeds trained alone."""

import jax
import numpy as np
import optax
import pytest

import mmreg
from mmreg.data import iterate_batches, load_mfeat, steps_per_epoch
from mmreg.train import init_train_state, make_train_step
from mmreg.train.methods import build_method
from mmreg.train.seeds import (
    init_seed_states,
    make_seeds_train_step,
    seed_batches,
    unstack_tree,
)

SEEDS = (3, 11)


def _setup(method: str):
  splits = load_mfeat(("fou", "mor"), seed=0)
  train = splits.train.take(np.arange(96))

  def build(seed):
    return mmreg.mlp_classifier({"fou": 76, "mor": 6}, 10, hidden=(16,), feature_dim=8,
                                seed=seed)

  model = build(0)
  labels = mmreg.param_labels(model)
  tx = optax.chain(build_method(method, labels, model.modalities, {}, total_epochs=2),
                   optax.sgd(0.05, momentum=0.9))
  return train, build, tx, mmreg.classification_losses(model.modalities)


@pytest.mark.parametrize("method, needs_stack", [("joint", False), ("pcgrad", True)])
def test_vmapped_seeds_equal_seeds_trained_alone(method, needs_stack):
  train, build, tx, spec = _setup(method)
  batch_size, epochs = 32, 2
  spe = steps_per_epoch(len(train), batch_size)
  graphdef, states = init_seed_states(build, tx, SEEDS)
  step = make_seeds_train_step(graphdef, spec, tx, steps_per_epoch=spe,
                               with_loss_grads=needs_stack)
  for epoch in range(epochs):
    for batches in seed_batches(train, batch_size, SEEDS, epoch=epoch):
      states, metrics = step(states, batches)
  assert metrics["loss/total"].shape == (len(SEEDS),)

  step_alone = make_train_step(graphdef, spec, tx, steps_per_epoch=spe,
                               with_loss_grads=needs_stack)
  for i, seed in enumerate(SEEDS):
    _, alone = init_train_state(build(seed), tx, seed)
    for epoch in range(epochs):
      for batch in iterate_batches(train, batch_size, seed=seed, epoch=epoch):
        alone, _ = step_alone(alone, batch)
    together = unstack_tree(states.params, i)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(together), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # The seeds did not collapse into one run.
  first = jax.tree.leaves(unstack_tree(states.params, 0))[0]
  second = jax.tree.leaves(unstack_tree(states.params, 1))[0]
  assert not np.allclose(first, second)


def test_seed_list_errors():
  _, build, tx, _ = _setup("joint")
  with pytest.raises(ValueError, match="distinct"):
    init_seed_states(build, tx, [1, 1])
  with pytest.raises(ValueError, match="different structures"):
    init_seed_states(lambda s: mmreg.mlp_classifier({"fou": 76, "mor": 6}, 10,
                                                    hidden=(16 + s,), seed=s), tx, [0, 1])
