"""Every balancing method: jitted in optax.chain with sgd/adamw in the train step, through
nnx.Optimizer, registered by name, and finite for finite inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from balance_toys import labels, logits_with_confidence, tree
from flax import nnx

import mmreg
from mmreg.data import iterate_batches, load_mfeat
from mmreg.train import build_method, get_method, init_train_state, make_train_step

METHODS = ["joint", "ogm_ge", "inforeg", "agm", "redreg", "redreg_subspace", "mmpareto", "dgl",
           "pcgrad", "mgda"]
# agm's default needs its own model and losses (tests/test_agm_loop.py); here the per-encoder
# option runs on the classification losses.
OPTIONS = {"agm": {"apply_to": "encoders"}, "redreg": {"total_epochs": 2, "probe_every": 2},
           "redreg_subspace": {"total_epochs": 2}}


@pytest.fixture(scope="module")
def setup():
  splits = load_mfeat(("fou", "mor"))
  model = mmreg.mlp_classifier({"fou": 76, "mor": 6}, 10, hidden=(8,), feature_dim=4)
  batches = list(iterate_batches(splits.train, 256, seed=0, epoch=0))[:3]
  return model, batches


@pytest.mark.parametrize("name", METHODS)
def test_method_in_jitted_train_step(setup, name):
  model, batches = setup
  method = get_method(name)
  tx = optax.chain(build_method(name, mmreg.param_labels(model), model.modalities,
                                OPTIONS.get(name)), optax.sgd(0.05, momentum=0.9))
  graphdef, state = init_train_state(model, tx, 0)
  step = make_train_step(graphdef, mmreg.classification_losses(model.modalities), tx,
                         steps_per_epoch=2, with_loss_grads=method.needs_loss_grads)
  before = jax.tree.map(np.asarray, state.params)
  for b in batches:
    state, metrics = step(state, b)
  assert np.isfinite(float(metrics["loss/total"]))
  for leaf in jax.tree.leaves(state.params):
    assert np.all(np.isfinite(np.asarray(leaf)))
  assert any(not np.allclose(a, np.asarray(c)) for a, c in
             zip(jax.tree.leaves(before), jax.tree.leaves(state.params), strict=True))


@pytest.mark.parametrize("name", ["ogm_ge", "mmpareto", "redreg"])
def test_nnx_optimizer_update_with_extras(name):
  model = mmreg.mlp_classifier({"a": 5, "b": 3}, 3, hidden=(4,), feature_dim=4)
  rng = np.random.default_rng(0)
  batch = {"a": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 3, 8))}
  labels_tree = mmreg.param_labels(model, pure=False)
  inner = build_method(name, labels_tree, model.modalities, OPTIONS.get(name))
  optimizer = nnx.Optimizer(model, optax.chain(inner, optax.sgd(0.1)), wrt=nnx.Param)
  spec = mmreg.classification_losses(model.modalities)
  before = np.asarray(model.encoders["a"].layers[0].kernel.value)

  @nnx.jit
  def train_step(model, optimizer, batch):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def losses(params):
      out = nnx.merge(graphdef, params, rest)(batch)
      return spec(out, batch), out

    _, stack, out = mmreg.per_loss_grads(losses, params, has_aux=True)
    grads = stack.weighted_sum(spec.weights)
    optimizer.update(model, grads, loss_grads=stack, modality_logits=out.modality_logits,
                     labels=batch["label"], features=out.features, epoch=jnp.asarray(0),
                     encode_fn=model.encode, inputs={m: batch[m] for m in "ab"})

  train_step(model, optimizer, batch)
  after = np.asarray(model.encoders["a"].layers[0].kernel.value)
  assert np.all(np.isfinite(after)) and not np.allclose(before, after)


TOY_FACTORIES = {
    "ogm_ge": lambda: mmreg.ogm_ge(labels()),
    "inforeg": lambda: mmreg.inforeg(labels()),
    "agm": lambda: mmreg.agm(labels(), apply_to="encoders"),
    "redreg": lambda: mmreg.redreg(labels(), total_epochs=3, probe_every=0),
    "redreg_subspace": lambda: mmreg.redreg(labels(), total_epochs=3, probe_every=0,
                                            variant="subspace"),
    "mmpareto": lambda: mmreg.mmpareto(labels()),
    "dgl": lambda: mmreg.dgl(labels()),
    "pcgrad": lambda: mmreg.pcgrad(),
    "mgda": lambda: mmreg.mgda(),
}


@pytest.mark.parametrize("name", sorted(TOY_FACTORIES))
def test_finite_for_finite_inputs_and_jitted_in_adamw_chain(name):
  rng = np.random.default_rng(1)
  tx = optax.chain(TOY_FACTORIES[name](), optax.adamw(1e-3))
  logits, y = logits_with_confidence([0.999, 0.001])

  @jax.jit
  def update(state, params, scale):
    rows = {k: jax.tree.map(lambda x: scale * x, tree(np.random.default_rng(i)))
            for i, k in enumerate(("fused", "a", "b"))}
    g = jax.tree.map(lambda *x: sum(x), *rows.values())
    feats = {m: scale * jnp.asarray(np.random.default_rng(7).normal(size=(4, 3)), jnp.float32)
             for m in "ab"}
    return tx.update(g, state, params, loss_grads=loss_grads_of(rows), modality_logits=logits,
                     labels=y, features=feats, shapley_logits=logits, epoch=jnp.asarray(0))

  params = tree(rng, 1e3)
  for scale in (0.0, 1e-30, 1e-3, 1e6):
    state = tx.init(params)
    for p in (params, tree(rng, 1e3)):
      out, state = update(state, p, jnp.float32(scale))
    for leaf in jax.tree.leaves(out) + jax.tree.leaves(state):
      leaf = np.asarray(leaf)
      if np.issubdtype(leaf.dtype, np.floating):
        # k = +inf in InfoReg's diagnostics marks "window not complete yet".
        assert np.all(np.isfinite(leaf) | np.isposinf(leaf)), (name, scale)


def loss_grads_of(rows):
  names = tuple(rows)
  return mmreg.LossGrads(grads=jax.tree.map(lambda *x: jnp.stack(x), *rows.values()),
                         names=names)


def test_registry_rejects_bad_options():
  model = mmreg.mlp_classifier({"a": 5, "b": 3}, 3, hidden=(4,), feature_dim=4)
  with pytest.raises(ValueError, match="bad options"):
    build_method("ogm_ge", mmreg.param_labels(model), model.modalities, {"alpah": 1.0})
  with pytest.raises(ValueError, match="unknown method"):
    get_method("ogm")

