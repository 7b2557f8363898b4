"""`train_runs`: a grid of (learning rate, seed) runs trained together under one vmapped,
scanned program equals each run trained alone with the library's step."""

import jax
import numpy as np
import optax
import pytest

import mmreg
from mmreg.data import iterate_batches, load_mfeat
from mmreg.data.dataset import Splits
from mmreg.metrics import accuracy, linear_probe_accuracy
from mmreg.train import evaluate_runs, init_train_state, make_predict, make_train_step, take_runs
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


def _alone(build, method, spec, splits, lr, seed):
  """One run with the library's jitted step: params and val accuracy after every epoch."""
  tx = optax.chain(method, sgd_momentum(lr))
  graphdef, state = init_train_state(build(seed), tx, seed)
  spe = len(splits.train) // BATCH
  step = make_train_step(graphdef, spec, tx, steps_per_epoch=spe, with_loss_grads=True)
  predict = make_predict(graphdef)
  history = []
  for epoch in range(EPOCHS):
    for batch in iterate_batches(splits.train, BATCH, seed=seed, epoch=epoch):
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


def test_patience_stops_when_no_run_improves():
  splits, build, method, spec = _setup()
  result = train_runs(build, spec, method, splits, learning_rates=(1e-9,), seeds=(0, 1),
                      batch_size=BATCH, max_epochs=20, patience=2, with_loss_grads=True)
  # With a negligible step the validation accuracy never rises after epoch 0.
  assert result.epochs == 3 and list(result.best_epoch) == [0, 0]


def test_train_runs_rejects_bad_grids():
  splits, build, method, spec = _setup()
  with pytest.raises(ValueError, match="distinct"):
    train_runs(build, spec, method, splits, learning_rates=(0.1,), seeds=(1, 1),
               batch_size=BATCH, max_epochs=1, patience=1)
  with pytest.raises(ValueError, match="finite and positive"):
    train_runs(build, spec, method, splits, learning_rates=(float("nan"),), seeds=(1,),
               batch_size=BATCH, max_epochs=1, patience=1)


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
