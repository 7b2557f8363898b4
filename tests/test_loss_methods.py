"""Loss-side methods with epoch-level state: PMR's prototype pass, G-Blending's probes, the step
and the training loop (short runs and exact resume).

Oracles: fanyunfeng-bit/Modal-Imbalance-PMR main_Prototype_grad.py (commit 3615e48);
GeWu-Lab/BalanceBenchmark balancemm/trainer/GBlending_trainer.py (commit 4c1482f).
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_balance_losses import reference_class_means, reference_gblending

import mmreg
from mmreg.data.dataset import MultimodalDataset, iterate_batches
from mmreg.losses import classification_losses, pmr_loss
from mmreg.train import (
    EpochContext,
    gblending,
    init_train_state,
    make_train_step,
    model_apply,
    pmr,
    split_model,
)
from mmreg.train.loop import train_and_evaluate
from mmreg.train.loss_methods import probe_losses, prototype_batches
from tests.conftest import tiny_config

DIMS, K = {"a": 5, "b": 3}, 3


def dataset(rng, n: int) -> MultimodalDataset:
  labels = np.arange(n) % K
  inputs = {m: (rng.normal(size=(n, d)) + labels[:, None]).astype(np.float32)
            for m, d in DIMS.items()}
  return MultimodalDataset(inputs, labels, K)


def context(rng, *, epoch=0, optimizer=None, n_train=50, n_val=40, batch_size=16, params=None):
  model = mmreg.mlp_classifier(DIMS, K, hidden=(8,), feature_dim=4)
  graphdef, model_params, model_state = split_model(model)
  return EpochContext(graphdef, model_params if params is None else params, model_state,
                      dataset(rng, n_train), dataset(rng, n_val),
                      classification_losses(model.modalities),
                      optimizer or optax.sgd(0.1, momentum=0.9), batch_size, 0, epoch)


@functools.partial(jax.jit, static_argnums=0)
def _output(graphdef, params, model_state, batch):
  return model_apply(graphdef, params, model_state, batch)[0]


def features_of(ctx: EpochContext, data: MultimodalDataset) -> dict:
  out = _output(ctx.graphdef, ctx.params, ctx.model_state, data.as_batch())
  return {m: np.asarray(f, np.float64) for m, f in out.features.items()}


def reference_batches_read(num_samples: int, batch_size: int) -> int:
  """Batches calculate_prototype reads from a DataLoader (drop_last=False), :405-430."""
  all_num = math.ceil(num_samples / batch_size)
  sample_count = 0
  for _ in range(all_num):
    sample_count += 1
    if sample_count >= all_num // 10:
      break
  return sample_count


def test_prototype_pass_reads_as_many_batches_as_the_authors_loop():
  for n in range(1, 3000, 37):
    for b in (1, 7, 64, 128):
      assert prototype_batches(n, b, 0.1) == reference_batches_read(n, b), (n, b)
  assert prototype_batches(50, 16, 1.0) == 4


def test_pmr_update_matches_the_authors_prototypes_and_window(rng):
  method = pmr(momentum=0.3, prototype_fraction=1.0, start_epoch=1, end_epoch=2)
  ctx = context(rng)
  state = method.init(ctx)
  assert {m: p.shape for m, p in state.prototypes.items()} == {"a": (K, 4), "b": (K, 4)}
  previous = None
  for epoch in range(4):
    params = jax.tree.map(lambda p, e=epoch: p + 0.1 * e, ctx.params)  # "trained" encoders
    ctx_e = dataclasses.replace(ctx, params=params, epoch=epoch)
    state = method.update(state, ctx_e)
    feats = features_of(ctx_e, ctx.train)
    flag = max(epoch - 1, 0)  # the `epoch` argument of the call that built them, :535-557
    for m in DIMS:
      means = reference_class_means(feats[m], ctx.train.labels, K)
      expected = means if flag <= 0 else 0.7 * means + 0.3 * previous[m]  # :435-440
      np.testing.assert_allclose(state.prototypes[m], expected, rtol=1e-5, atol=1e-6)
    assert float(state.active) == float(1 <= epoch <= 2)  # :156
    previous = {m: np.asarray(p, np.float64) for m, p in state.prototypes.items()}


def test_pmr_in_the_jitted_step_follows_the_state_without_retracing(rng):
  model = mmreg.mlp_classifier(DIMS, K, hidden=(8,), feature_dim=4)
  method = pmr(alpha=0.5)
  spec = classification_losses(model.modalities)
  tx = optax.chain(optax.sgd(0.05))
  graphdef, state = init_train_state(model, tx, 0)
  ctx = EpochContext(graphdef, state.params, state.model_state, dataset(rng, 64),
                     dataset(rng, 32), spec, tx, 16, 0, 0)
  state = state.replace(loss_state=method.update(method.init(ctx), ctx))
  step = make_train_step(graphdef, spec, tx, steps_per_epoch=4, loss_method=method)
  batch = next(iterate_batches(ctx.train, 16, seed=0, epoch=0))
  out = _output(graphdef, state.params, state.model_state, batch)
  expected = jax.jit(pmr_loss, static_argnums=(3, 4))(
      out.features, jnp.asarray(batch["label"]), state.loss_state.prototypes, ("a", "b"), 0.5)
  state, metrics = step(state, batch)
  np.testing.assert_allclose(metrics["loss/pmr"], expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss/total"], sum(
      metrics[f"loss/{n}"] for n in ("fused", "a", "b", "pmr")), rtol=1e-6)
  state = state.replace(loss_state=state.loss_state._replace(active=jnp.zeros(())))
  state, metrics = step(state, batch)
  np.testing.assert_allclose(metrics["loss/total"], sum(
      metrics[f"loss/{n}"] for n in ("fused", "a", "b")), rtol=1e-6)
  assert step._cache_size() == 1


def _fused_ce(graphdef, params, model_state, batch):  # criterion(out, label)
  out, new_state = model_apply(graphdef, params, model_state, batch)
  ce = optax.softmax_cross_entropy_with_integer_labels(out.logits, batch["label"]).mean()
  return ce, new_state


_oracle_ce = jax.jit(_fused_ce, static_argnums=0)
_oracle_grad_ce = jax.jit(jax.value_and_grad(_fused_ce, argnums=1, has_aux=True), static_argnums=0)


def oracle_probe(ctx: EpochContext, kept: tuple[str, ...], epochs: int):
  """super_epoch_origin (:306-360) for one loss, as a plain loop over the same batches."""
  params, model_state = ctx.params, ctx.model_state
  opt_state = ctx.optimizer.init(params)  # optimizer.load_state_dict(optimizer_origin), :314

  def padded(batch):  # temp_model(batch, padding=...): other modalities' inputs zeroed
    return {k: (np.zeros_like(v) if k in DIMS and k not in kept else v) for k, v in batch.items()}

  def ce(p, s, batch):
    return _oracle_ce(ctx.graphdef, p, s, batch)

  def grad_ce(p, s, batch):
    return _oracle_grad_ce(ctx.graphdef, p, s, batch)

  pre = now = None
  for epoch in range(epochs):
    _loss = 0.0
    for batch in iterate_batches(ctx.train, ctx.batch_size, seed=ctx.seed, epoch=ctx.epoch + epoch):
      (loss, model_state), grads = grad_ce(params, model_state, padded(batch))
      updates, opt_state = ctx.optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      _loss += float(loss)
    if epoch in (0, epochs - 1):
      _loss_v = 0.0
      for lo in range(0, len(ctx.val) - ctx.batch_size + 1, ctx.batch_size):  # drop_last
        batch = ctx.val.take(np.arange(lo, lo + ctx.batch_size)).as_batch()
        _loss_v += float(ce(params, model_state, padded(batch))[0])
      if epoch == 0:
        pre = (_loss, _loss_v)
      else:
        now = (_loss, _loss_v)
  return pre, now


def test_gblending_probes_and_weights_match_balancebenchmark(rng):
  ctx = context(rng, epoch=4)
  for kept in (("a",), ("a", "b")):
    got, expected = probe_losses(ctx, kept, 3), oracle_probe(ctx, kept, 3)
    np.testing.assert_allclose(got, expected, rtol=2e-5)
  method = gblending(super_epoch=2)
  state = method.init(ctx)
  assert {n: float(w) for n, w in state.weights.items()} == {"fused": 1.0, "a": 1.0, "b": 1.0}
  state = method.update(state, ctx)  # 4 % 2 == 0: a new estimate (:92)
  probes = {"output": ("a", "b"), "a": ("a",), "b": ("b",)}
  deltas = {n: oracle_probe(ctx, kept, 2) for n, kept in probes.items()}
  ref = reference_gblending(*({n: d[i][j] for n, d in deltas.items()}
                              for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))))
  for n, name in (("output", "fused"), ("a", "a"), ("b", "b")):
    np.testing.assert_allclose(state.weights[name], ref[n], rtol=1e-4)
  assert method.update(state, dataclasses.replace(ctx, epoch=5)) is state  # not an estimate epoch


def test_loss_methods_reject_bad_settings(rng):
  with pytest.raises(ValueError, match="at least 2"):
    gblending(super_epoch=1)
  with pytest.raises(ValueError, match="prototype_fraction"):
    pmr(prototype_fraction=0.0)
  ctx = context(rng, n_val=8)
  with pytest.raises(ValueError, match="needs a full batch"):
    gblending(super_epoch=2).update(gblending().init(ctx), ctx)
  with pytest.raises(ValueError, match=r"lacks \['b'\]"):
    gblending().init(dataclasses.replace(ctx, loss_spec=classification_losses(("a",))))


def _same(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), [("pmr", {}), ("gblending", {"super_epoch": 2})])
def test_loss_method_through_the_loop_resumes_exactly(tmp_path, name, options):
  cfg = tiny_config(epochs=3)  # 9 steps per epoch
  cfg.method.name, cfg.method.options = name, options
  straight = train_and_evaluate(cfg, tmp_path / "straight", progress=False)
  assert train_and_evaluate(cfg, tmp_path / "resumed", progress=False, max_steps=13) is None
  resumed = train_and_evaluate(cfg, tmp_path / "resumed", progress=False)
  assert resumed["steps"] == straight["steps"] == 27
  assert _same(straight["state"].params, resumed["state"].params)
  assert _same(straight["state"].loss_state, resumed["state"].loss_state)
  assert resumed["test"] == straight["test"]
  loss_state = straight["state"].loss_state
  if name == "pmr":
    assert float(loss_state.active) == 1.0
    assert all(np.abs(np.asarray(p)).sum() > 0 for p in loss_state.prototypes.values())
  else:
    weights = {n: float(w) for n, w in loss_state.weights.items()}
    assert set(weights) == {"fused", "fou", "pix"} and math.isclose(sum(weights.values()), 1,
                                                                   rel_tol=1e-6)
