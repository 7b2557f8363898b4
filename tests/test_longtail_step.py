"""`experiments.longtail` on the library's step and loop equals the experiment's former
hand-written step.

The oracle is the step `experiments/longtail.py:build_run` had at commit 4b9bb97 (its
`loss_fn`, :87-97, and `step`, :99-109): the loss is re-computed here in plain JAX from its
formulas — cross-entropy; the dot-regression loss of Yang et al. 2022 against the fixed ETF
kernel, ½·mean((ĥᵀm_y − ‖m_y‖)²) with ĥ = h/‖h‖ (/work/shared/REFERENCES.md §7); and
CE + λ·(1/K')·Σ_{c seen} (1 − cos(w_c, μ_c − μ̄)) with the EMA centres μ (β = 0.9, a class
starts at its first batch mean) advanced by the batch before the cosine (SpA-Reg) — and
differentiated with `jax.grad`; the transforms after the loss are those the former step
chained (`spa_proj`, `track_class_centres`, `spa_slerp_hook`, the optimizer).
The library side is the step `mmreg.train.train_runs` builds from the experiment's
`method_setup`, step by step, and `train_runs` itself over the oracle's first steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mmreg
from experiments.longtail import HPARAMS, METHODS, N_MAX, method_setup
from mmreg.data import Splits, iterate_batches, load_mfeat, longtail_splits, steps_per_epoch
from mmreg.train import (
  EpochContext,
  init_train_state,
  make_optimizer,
  make_train_step,
  model_apply,
  split_model,
  train_runs,
)
from mmreg.train.diagnostics import find_diagnostics

STEPS = 4
EPOCHS = 2


@pytest.fixture(scope="module")
def splits():
  return longtail_splits(load_mfeat(("fou", "pix"), seed=0), 10.0, seed=0, n_max=N_MAX)


def ce_oracle(logits, y):
  logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
  return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def dot_regression_oracle(h, y, etf):
  h = h / jnp.linalg.norm(h, axis=1, keepdims=True)
  m = etf.T[y]
  return 0.5 * jnp.mean((jnp.sum(h * m, axis=1) - jnp.linalg.norm(m, axis=1)) ** 2)


def ema_oracle(centres, seen, h, y, beta=0.9):
  """Class centres after one batch: a class in the batch moves to β·μ + (1−β)·mean, or to the
  batch mean at its first appearance; the others keep theirs."""
  onehot = jax.nn.one_hot(y, centres.shape[0])
  counts = onehot.sum(0)
  means = onehot.T @ h / jnp.maximum(counts, 1.0)[:, None]
  moved = jnp.where(seen[:, None], beta * centres + (1 - beta) * means, means)
  present = counts > 0
  return jnp.where(present[:, None], moved, centres), seen | present


def spa_reg_oracle(kernel, h, y, centres, seen):
  centres, seen = ema_oracle(centres, seen, jax.lax.stop_gradient(h), y)
  mean = (seen.astype(centres.dtype) @ centres) / seen.sum()
  d = centres - mean
  cos = jnp.sum(kernel.T * d, axis=1) / (
      jnp.linalg.norm(kernel, axis=0) * jnp.linalg.norm(d, axis=1))
  return jnp.sum(jnp.where(seen, 1.0 - cos, 0.0)) / seen.sum()


def former_run(method, dims, spe, seed):
  """(params, step) of the former experiment's step for `method`, with the loss above."""
  model = mmreg.mlp_classifier(dims, 10, hidden=HPARAMS["hidden"],
                               feature_dim=HPARAMS["feature_dim"],
                               head="etf" if method == "etf_dr" else "linear", seed=seed)
  graphdef, params, model_state = split_model(model)
  labels = None if method == "etf_dr" else mmreg.param_labels(model)
  method_tx = {"spa_proj": lambda: mmreg.spa_proj(labels),
               "spa_slerp": lambda: mmreg.track_class_centres(labels)}.get(
                   method, optax.identity)()
  tx = optax.chain(method_tx, make_optimizer(HPARAMS["optim"], spe, EPOCHS))
  slerp = mmreg.spa_slerp_hook(labels, total_epochs=EPOCHS, alpha=0.1, threshold=0.9)
  weight = HPARAMS["methods"]["spa_reg"]["options"]["weight"]

  def loss_fn(params, centres, seen, batch):
    out, _ = model_apply(graphdef, params, model_state, batch)
    y = batch["label"]
    if method == "etf_dr":
      return dot_regression_oracle(out.fused, y, model_state["head"]["kernel"]), out
    loss = ce_oracle(out.logits, y)
    if method == "spa_reg":
      loss = loss + weight * spa_reg_oracle(params["head"]["kernel"], out.fused, y, centres,
                                            seen)
    return loss, out

  @jax.jit
  def step(carry, batch, epoch):
    params, opt_state, centres, seen = carry
    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, centres, seen, batch)
    updates, opt_state = tx.update(grads, opt_state, params, penultimate=out.fused,
                                   labels=batch["label"])
    params = optax.apply_updates(params, updates)
    if method == "spa_slerp":
      params = slerp(params, opt_state, epoch)
    centres, seen = ema_oracle(centres, seen, out.fused, batch["label"])
    return (params, opt_state, centres, seen), loss

  k, d = 10, HPARAMS["feature_dim"] * len(dims)  # concat fusion
  return (params, tx.init(params), jnp.zeros((k, d)), jnp.zeros((k,), bool)), step


def library_run(setup, splits, spe, seed):
  """The state at the start of epoch 0 and the step `train_runs` builds from `setup`: its
  transform chained before `optax.inject_hyperparams(setup.optimizer)` at the experiment's
  learning rate, a loss-side method initialised and updated for the epoch."""
  lr = HPARAMS["optim"]["learning_rate"]
  tx = optax.chain(setup.method_tx, optax.inject_hyperparams(setup.optimizer)(learning_rate=lr))
  graphdef, state = init_train_state(setup.build_model(seed), tx, seed)
  step = make_train_step(graphdef, setup.loss_spec, tx, steps_per_epoch=spe,
                         post_update=setup.post_update, loss_method=setup.loss_method)
  if setup.loss_method is not None:
    context = EpochContext(graphdef, state.params, state.model_state, splits.train, splits.val,
                           setup.loss_spec, setup.optimizer(lr), HPARAMS["batch_size"], seed, 0)
    state = state.replace(loss_state=setup.loss_method.update(setup.loss_method.init(context),
                                                              context))
  return state, step


@pytest.mark.parametrize("method", METHODS)
def test_library_step_equals_former_step(method, splits):
  dims = {v: splits.train.input_shapes[v][0] for v in ("fou", "pix")}
  bs = HPARAMS["batch_size"]
  spe = steps_per_epoch(len(splits.train), bs)
  state, step = library_run(method_setup(method, dims, spe, EPOCHS), splits, spe, seed=1)
  carry, former_step = former_run(method, dims, spe, seed=1)
  batches = iterate_batches(splits.train, bs, seed=1, epoch=0)
  for _, batch in zip(range(STEPS), batches, strict=False):
    state, metrics = step(state, batch)
    carry, former_loss = former_step(carry, batch, jnp.int32(0))
    objective = metrics["loss/total"] + find_diagnostics(state.opt_state).get("spa_reg_loss", 0.0)
    np.testing.assert_allclose(objective, former_loss, rtol=1e-5, atol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                 state.params, carry[0])
  if method == "spa_reg":  # the centres the regulariser reads next step
    centres = mmreg.find_class_centres(state.opt_state)
    np.testing.assert_allclose(centres.centres, carry[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(centres.seen, carry[3])


@pytest.mark.parametrize("method", ["etf_dr", "spa_slerp"])
def test_train_runs_equals_former_steps(method, splits):
  """`train_runs` on the experiment's setup (a loss-side method; a post-update hook) over one
  epoch of a training split cut to `STEPS` batches ends at the former steps' parameters."""
  dims = {v: splits.train.input_shapes[v][0] for v in ("fou", "pix")}
  bs = HPARAMS["batch_size"]
  spe = steps_per_epoch(len(splits.train), bs)
  cut = Splits(splits.train.take(np.arange(STEPS * bs)), splits.val, splits.test)
  setup = method_setup(method, dims, spe, EPOCHS)
  result = train_runs(setup.build_model, setup.loss_spec, setup.method_tx, [cut],
                      learning_rates=(HPARAMS["optim"]["learning_rate"],), seeds=(1,),
                      batch_size=bs, max_epochs=1, patience=1, optimizer=setup.optimizer,
                      post_update=setup.post_update, loss_method=setup.loss_method,
                      keep="last")
  carry, former_step = former_run(method, dims, spe, seed=1)
  for batch in iterate_batches(cut.train, bs, seed=1, epoch=0):
    carry, _ = former_step(carry, batch, jnp.int32(0))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=2e-5, atol=2e-6),
               result.params, carry[0])


def test_spa_reg_adds_only_the_regulariser_gradient():
  """`mmreg.spa_reg` on zero updates is λ·∂/∂W of the oracle above, on the head kernel only."""
  rng = np.random.default_rng(0)
  params = {"enc": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
            "head": {"kernel": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)}}
  labels = {"enc": {"kernel": "a"}, "head": {"kernel": "head"}}
  h = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
  y = jnp.asarray([0, 1, 1, 2, 3, 0, 2, 1])
  tx = mmreg.spa_reg(labels, weight=0.5)
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for _ in range(2):
    centres = mmreg.find_class_centres(state)
    updates, state = tx.update(zeros, state, params, penultimate=h, labels=y)
    want = jax.grad(lambda w, c=centres, h=h: 0.5 * spa_reg_oracle(w, h, y, c.centres,
                                                                  c.seen))(
        params["head"]["kernel"])
    np.testing.assert_allclose(updates["head"]["kernel"], want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(updates["enc"]["kernel"], 0.0)
    h = h + 1.0


def test_spa_reg_and_etf_dr_errors():
  with pytest.raises(ValueError, match="weight=-1"):
    mmreg.spa_reg({}, weight=-1.0)
  tx = mmreg.spa_reg({"head": {"kernel": "head"}})
  params = {"head": {"kernel": jnp.ones((4, 3))}}
  with pytest.raises(ValueError, match="penultimate"):
    tx.update(params, tx.init(params), params)
  splits = longtail_splits(load_mfeat(("fou",), seed=0), 10.0, seed=0, n_max=N_MAX)
  setup = method_setup("ce", {"fou": splits.train.input_shapes["fou"][0]}, 10, 1)
  graphdef, params, model_state = split_model(setup.build_model(0))
  context = mmreg.train.EpochContext(graphdef, params, model_state, splits.train, splits.val,
                                     None, None, 32, 0, 0)
  with pytest.raises(ValueError, match="head='etf'"):
    mmreg.train.build_loss_method("etf_dr").init(context)


def test_etf_dr_replaces_only_the_fused_loss(splits):
  """With unimodal heads in the run's losses (the training loop's default), `etf_dr` trains
  the dot-regression loss at the fused loss's weight and keeps the unimodal ones."""
  dims = {v: splits.train.input_shapes[v][0] for v in ("fou", "pix")}
  model = mmreg.mlp_classifier(dims, 10, hidden=(8,), feature_dim=16, head="etf", seed=2)
  graphdef, params, model_state = split_model(model)
  etf_dr = mmreg.train.build_loss_method("etf_dr")
  state = etf_dr.init(mmreg.train.EpochContext(graphdef, params, model_state, splits.train,
                                               splits.val, None, None, 32, 0, 0))
  base = mmreg.classification_losses(("fou", "pix"), fused_weight=0.5, unimodal_weight=0.25)
  spec = etf_dr.loss_spec(base, state)
  assert dict(spec.weights) == {"dot_regression": 0.5, "fou": 0.25, "pix": 0.25}
  batch = next(iterate_batches(splits.train, 32, seed=0, epoch=0))
  out, _ = model_apply(graphdef, params, model_state, batch)
  losses = spec(out, batch)
  np.testing.assert_allclose(
      losses["dot_regression"],
      dot_regression_oracle(out.fused, batch["label"], model_state["head"]["kernel"]),
      rtol=1e-6)
  np.testing.assert_allclose(losses["fou"], ce_oracle(out.modality_logits["fou"],
                                                      batch["label"]), rtol=1e-6)
  assert mmreg.train.model_config_for("etf_dr", {}) == {"head": "etf"}
