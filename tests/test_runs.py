"""`train_runs`: a grid of (learning rate, seed) runs trained together under one vmapped,
scanned program equals each run trained alone with the library's step, also with one split per
seed, a training-batch augmentation, a custom selection score, a post-update hook and the last
epoch kept."""

import jax
import numpy as np
import optax
import pytest

import mmreg
from mmreg.data import iterate_batches, load_mfeat
from mmreg.data.dataset import Splits
from mmreg.metrics import accuracy, linear_probe_accuracy
from mmreg.train import (
  evaluate_runs,
  init_train_state,
  make_predict,
  make_train_step,
  runs,
  take_runs,
)
from mmreg.train.methods import build_method
from mmreg.train.runs import sgd_momentum, train_runs

LRS, SEEDS, BATCH, EPOCHS = (0.02, 0.08), (3, 11), 32, 3


def _setup():
  splits = load_mfeat(("fou", "mor"), seed=0)
  splits = Splits(splits.train.take(np.arange(128)), splits.val.take(np.arange(64)),
                  splits.test.take(np.arange(64)))

  def build(seed):
    return mmreg.mlp_classifier({"fou": 76, "mor": 6}, 10, hidden=(16,), feature_dim=8,
                                seed=seed)

  labels = mmreg.param_labels(build(0))
  method = build_method("pcgrad", labels, ("fou", "mor"), {}, updates_from_stack=True)
  return splits, build, method, mmreg.classification_losses(("fou", "mor"))


def _alone(build, method, spec, splits, lr, seed, augment=None, post_update=None):
  """One run with the library's jitted step: params and val accuracy after every epoch. With
  `augment`, step t's batch is `augment(fold_in(key(seed), t), batch)` (the documented key)."""
  tx = optax.chain(method, sgd_momentum(lr))
  graphdef, state = init_train_state(build(seed), tx, seed)
  spe = len(splits.train) // BATCH
  step = make_train_step(graphdef, spec, tx, steps_per_epoch=spe, with_loss_grads=True,
                         post_update=post_update)
  predict = make_predict(graphdef)
  history = []
  for epoch in range(EPOCHS):
    for b, batch in enumerate(iterate_batches(splits.train, BATCH, seed=seed, epoch=epoch)):
      if augment is not None:
        batch = augment(jax.random.fold_in(jax.random.key(seed), epoch * spe + b), batch)
      state, _ = step(state, batch)
    logits = predict(state.params, state.model_state, splits.val.as_batch()).logits
    history.append((jax.tree.map(np.asarray, state.params),
                    accuracy(splits.val.labels, np.asarray(logits).argmax(-1))))
  return history


def test_runs_trained_together_equal_runs_trained_alone():
  splits, build, method, spec = _setup()
  result = train_runs(build, spec, method, splits, learning_rates=LRS, seeds=SEEDS,
                      batch_size=BATCH, max_epochs=EPOCHS, patience=EPOCHS,
                      with_loss_grads=True)
  assert list(result.learning_rates) == [0.02, 0.02, 0.08, 0.08]
  assert list(result.seeds) == [3, 11, 3, 11]
  assert result.epochs == EPOCHS and not result.diverged.any()
  for r in (0, 3):  # (0.02, seed 3) and (0.08, seed 11)
    lr, seed = result.learning_rates[r], result.seeds[r]
    history = _alone(build, method, spec, splits, float(lr), int(seed))
    val = [acc for _, acc in history]
    best = int(np.argmax(val))  # the first epoch of the highest validation accuracy
    assert result.best_epoch[r] == best
    assert result.best_val_accuracy[r] == pytest.approx(val[best])
    together = jax.tree.map(lambda x, r=r: np.asarray(x[r]), result.params)
    for a, b in zip(jax.tree.leaves(history[best][0]), jax.tree.leaves(together), strict=True):
      np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6)
  # Runs differ: a higher learning rate moves the encoders further in the first epoch.
  steps = result.first_epoch_encoder_step
  assert steps[2] > 2 * steps[0] and steps[3] > 2 * steps[1]
  # Selected runs are evaluated alone on the test split.
  picked = take_runs(result, [3, 0])
  assert list(picked.seeds) == [11, 3]
  out = evaluate_runs(picked, splits.test)
  assert out["logits"].shape == (2, 64, 10) and set(out["features"]) == {"fou", "mor"}


def _assert_params_equal(expected, result, r):
  together = jax.tree.map(lambda x: np.asarray(x[r]), result.params)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(together), strict=True):
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6)


def _other_splits():
  """Splits of another mfeat seed, of the sizes of `_setup`'s."""
  other = load_mfeat(("fou", "mor"), seed=1)
  return Splits(other.train.take(np.arange(128)), other.val.take(np.arange(64)),
                other.test.take(np.arange(64)))


def test_per_seed_splits_train_each_run_on_its_seeds_split():
  splits, build, method, spec = _setup()
  other = _other_splits()
  result = train_runs(build, spec, method, [splits, other], learning_rates=(0.05,),
                      seeds=(3, 11), batch_size=BATCH, max_epochs=EPOCHS, patience=EPOCHS,
                      with_loss_grads=True)
  for r, (seed, own) in enumerate(((3, splits), (11, other))):
    history = _alone(build, method, spec, own, 0.05, seed)
    val = [acc for _, acc in history]
    best = int(np.argmax(val))
    assert result.best_epoch[r] == best
    assert result.best_val_accuracy[r] == pytest.approx(val[best])
    _assert_params_equal(history[best][0], result, r)
  # Each run is evaluated on its own dataset: the oracle is the library's predict at the
  # parameters of the run trained alone.
  out = evaluate_runs(result, [splits.test, other.test])
  history = _alone(build, method, spec, other, 0.05, 11)
  best = int(np.argmax([acc for _, acc in history]))
  graphdef, _ = init_train_state(build(11), optax.sgd(0.1), 11)
  alone = make_predict(graphdef)(history[best][0], jax.tree.map(lambda x: x[1],
                                                                result.model_state),
                                 other.test.as_batch()).logits
  np.testing.assert_allclose(out["logits"][1], np.asarray(alone), rtol=2e-5, atol=2e-5)


def _dropout(key, batch):
  return mmreg.data.modality_dropout(key, batch, 0.5, per_sample=True)


def test_augment_trains_each_run_as_alone_with_the_seed_and_step_key():
  splits, build, method, spec = _setup()
  kwargs = dict(learning_rates=(0.05,), seeds=(3, 11), batch_size=BATCH, max_epochs=EPOCHS,
                patience=EPOCHS, with_loss_grads=True)
  augmented = train_runs(build, spec, method, splits, augment=_dropout, **kwargs)
  plain = train_runs(build, spec, method, splits, **kwargs)
  history = _alone(build, method, spec, splits, 0.05, 11, augment=_dropout)
  best = int(np.argmax([acc for _, acc in history]))
  assert augmented.best_epoch[1] == best
  _assert_params_equal(history[best][0], augmented, 1)
  # The augmentation reaches the step: the dropped modalities change the trained parameters.
  change = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(augmented.params), jax.tree.leaves(plain.params),
                               strict=True))
  assert change > 1e-3


def test_val_score_selects_the_epochs():
  splits, build, method, spec = _setup()
  seen = []

  def worst_accuracy(outputs, labels):
    seen.append((set(outputs), labels.shape))
    return -np.mean(outputs["logits"].argmax(-1) == labels, axis=-1)

  result = train_runs(build, spec, method, splits, learning_rates=(0.05,), seeds=(3,),
                      batch_size=BATCH, max_epochs=EPOCHS, patience=EPOCHS,
                      with_loss_grads=True, val_score=worst_accuracy)
  assert seen[0] == ({"logits", "modality_logits", "features", "latents", "fused"}, (1, 64))
  history = _alone(build, method, spec, splits, 0.05, 3)
  val = [acc for _, acc in history]
  worst = int(np.argmin(val))  # the first epoch of the lowest validation accuracy
  assert result.best_epoch[0] == worst
  assert result.best_val_score[0] == pytest.approx(-val[worst])
  assert result.best_val_accuracy[0] == pytest.approx(val[worst])
  _assert_params_equal(history[worst][0], result, 0)


def test_patience_stops_when_no_run_improves():
  splits, build, method, spec = _setup()
  kwargs = dict(learning_rates=(1e-9,), seeds=(0, 1), batch_size=BATCH, max_epochs=5,
                patience=2, with_loss_grads=True)
  result = train_runs(build, spec, method, splits, **kwargs)
  # With a negligible step the validation accuracy never rises after epoch 0.
  assert result.epochs == 3 and list(result.best_epoch) == [0, 0]
  last = train_runs(build, spec, method, splits, keep="last", **kwargs)
  assert last.epochs == 5 and list(last.best_epoch) == [4, 4]


def _shrink(params, opt_state, epoch):
  """A post-update that depends on the epoch: params · (1 − 0.01·(epoch + 1))."""
  return jax.tree.map(lambda p: p * (1.0 - 0.01 * (epoch + 1)), params)


def test_post_update_last_epoch_and_epoch_hook_match_the_run_alone():
  splits, build, method, spec = _setup()
  seen = []

  def record(epoch, params, model_state):
    seen.append((epoch, jax.tree.map(np.array, params)))

  result = train_runs(build, spec, method, splits, learning_rates=(0.05,), seeds=(3, 11),
                      batch_size=BATCH, max_epochs=EPOCHS, patience=1, with_loss_grads=True,
                      post_update=_shrink, keep="last", on_epoch=record)
  assert result.epochs == EPOCHS and list(result.best_epoch) == [EPOCHS - 1] * 2
  assert [epoch for epoch, _ in seen] == list(range(EPOCHS))
  for r, seed in enumerate((3, 11)):
    history = _alone(build, method, spec, splits, 0.05, seed, post_update=_shrink)
    for (_, params), (expected, _) in zip(seen, history, strict=True):
      for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(b[r], a, rtol=2e-5, atol=2e-6)
    _assert_params_equal(history[-1][0], result, r)  # the last epoch, not the best one
    assert result.best_val_accuracy[r] == pytest.approx(history[-1][1])
  # The hook reaches the step: without it the parameters differ.
  plain = _alone(build, method, spec, splits, 0.05, 3)[-1][0]
  assert max(float(np.max(np.abs(a - b[0]))) for a, b in zip(
      jax.tree.leaves(plain), jax.tree.leaves(seen[-1][1]), strict=True)) > 1e-3


def test_train_runs_rejects_bad_grids():
  splits, build, method, spec = _setup()
  with pytest.raises(ValueError, match="distinct"):
    train_runs(build, spec, method, splits, learning_rates=(0.1,), seeds=(1, 1),
               batch_size=BATCH, max_epochs=1, patience=1)
  with pytest.raises(ValueError, match="finite and positive"):
    train_runs(build, spec, method, splits, learning_rates=(float("nan"),), seeds=(1,),
               batch_size=BATCH, max_epochs=1, patience=1)
  with pytest.raises(ValueError, match="one Splits per seed"):
    train_runs(build, spec, method, [splits], learning_rates=(0.1,), seeds=(1, 2),
               batch_size=BATCH, max_epochs=1, patience=1)
  shorter = Splits(splits.train.take(np.arange(96)), splits.val, splits.test)
  with pytest.raises(ValueError, match="seed 2's train split has 96 samples .* equal sizes"):
    train_runs(build, spec, method, [splits, shorter], learning_rates=(0.1,), seeds=(1, 2),
               batch_size=BATCH, max_epochs=1, patience=1)
  with pytest.raises(ValueError, match="keep='first'; use 'best'"):
    train_runs(build, spec, method, splits, learning_rates=(0.1,), seeds=(1,),
               batch_size=BATCH, max_epochs=1, patience=1, keep="first")
  with pytest.raises(ValueError, match="one score per run"):
    train_runs(build, spec, method, splits, learning_rates=(0.1,), seeds=(1, 2),
               batch_size=BATCH, max_epochs=1, patience=1, with_loss_grads=True,
               val_score=lambda outputs, labels: np.zeros(3))


def test_linear_probe_matches_numpy_logistic_regression():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 5)) * 2
  y_train, y_test = rng.integers(0, 3, 300), rng.integers(0, 3, 200)
  x_train = centres[y_train] + rng.normal(size=(300, 5))
  x_test = centres[y_test] + rng.normal(size=(200, 5))
  # Independent NumPy oracle: the same standardised, L2-penalised softmax regression, fitted by
  # plain full-batch gradient descent to convergence.
  mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
  a, b = (x_train - mu) / sd, (x_test - mu) / sd
  w, c = np.zeros((5, 3)), np.zeros(3)
  onehot = np.eye(3)[y_train]
  for _ in range(3000):
    z = a @ w + c
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    w -= 0.5 * (a.T @ (p - onehot) / len(a) + 1e-4 * w)
    c -= 0.5 * (p - onehot).mean(0)
  oracle = ((b @ w + c).argmax(1) == y_test).mean()
  got = linear_probe_accuracy(x_train, y_train, x_test, y_test, 3)
  assert abs(float(got) - oracle) <= 0.01
  noise = rng.normal(size=(300, 5))  # features without label information: near chance
  both = linear_probe_accuracy(np.stack([x_train, noise]), y_train,
                               np.stack([x_test, rng.normal(size=(200, 5))]), y_test, 3)
  assert both.shape == (2,) and both[0] == pytest.approx(float(got)) and both[1] < 0.5


class _Streamed:
  """A split without `as_batch`: rows are read batch by batch, like `SourceDataset`."""

  def __init__(self, data):
    self._data = data

  def __len__(self):
    return len(self._data)

  def batches(self, indices):
    return self._data.batches(indices)


def test_streamed_split_trains_like_the_split_in_memory():
  splits, build, method, spec = _setup()
  kwargs = dict(learning_rates=(0.05,), seeds=(3, 11), batch_size=BATCH, max_epochs=2,
                patience=2, with_loss_grads=True)
  in_memory = train_runs(build, spec, method, splits, **kwargs)
  streamed = train_runs(build, spec, method,
                        Splits(_Streamed(splits.train), splits.val, splits.test), **kwargs)
  np.testing.assert_array_equal(streamed.best_epoch, in_memory.best_epoch)
  for a, b in zip(jax.tree.leaves(in_memory.params), jax.tree.leaves(streamed.params),
                  strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=2e-6)


def test_a_later_call_with_the_same_objects_reuses_the_programs_on_new_data():
  splits, build, method, spec = _setup()
  kwargs = dict(learning_rates=(0.05,), seeds=(3,), batch_size=BATCH, max_epochs=2, patience=2,
                with_loss_grads=True)
  train_runs(build, spec, method, splits, **kwargs)
  cached = len(runs._PROGRAMS)
  shuffled = np.random.default_rng(0).permutation(splits.train.labels)
  relabelled = Splits(splits.train.replace(labels=shuffled), splits.val, splits.test)
  reused = train_runs(build, spec, method, relabelled, **kwargs)
  assert len(runs._PROGRAMS) == cached
  _, _, fresh_method, fresh_spec = _setup()  # new objects: new programs, same training
  fresh = train_runs(build, fresh_spec, fresh_method, relabelled, **kwargs)
  _assert_params_equal(jax.tree.map(lambda x: np.asarray(x[0]), fresh.params), reused, 0)
