"""Property tests: every transform, loss and metric stays finite, keeps shapes and dtypes, and is
a no-op where its method says so, over random, zero, collinear, opposite, huge (1e30), tiny
(1e-30) and mixed-scale inputs in float32 and bfloat16.

Each test builds its function once and jits it once; examples vary only array values of fixed
shapes (one compilation per dtype). Every family × dtype pair is an explicit example; hypothesis
adds seeded draws on top (derandomized, so CI is reproducible).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mmreg

FAMILIES = ("random", "zero", "collinear", "opposite", "huge", "tiny", "mixed")
DTYPES = ("float32", "bfloat16")
CASES = list(itertools.product(FAMILIES, DTYPES))
SETTINGS = settings(max_examples=4, deadline=None, derandomize=True, database=None)

B, K, L = 6, 3, 3
LOSSES = ("fused", "a", "b")


def family_rows(family: str, rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
  """`[rows, size]` float64 values of one input family."""
  base = rng.normal(size=size)
  if family == "random":
    return rng.normal(size=(rows, size))
  if family == "zero":
    return np.zeros((rows, size))
  if family == "collinear":  # positive multiples of one vector
    return rng.uniform(0.5, 2.0, size=(rows, 1)) * base
  if family == "opposite":  # +v, −v, +v, ...
    return np.where(np.arange(rows)[:, None] % 2 == 0, 1.0, -1.0) * base
  if family == "huge":
    return 1e30 * rng.normal(size=(rows, size))
  if family == "tiny":
    return 1e-30 * rng.normal(size=(rows, size))
  if family == "mixed":  # magnitudes from 1e-30 to 1e30 side by side
    return rng.normal(size=(rows, size)) * 10.0 ** rng.uniform(-30, 30, size=(rows, size))
  raise ValueError(family)


def each_case(test):
  """Every family × dtype as an explicit example, plus seeded hypothesis draws."""
  for case in CASES:
    test = example(case=case, seed=0)(test)
  return given(case=st.sampled_from(CASES), seed=st.integers(0, 2**16))(SETTINGS(test))


def assert_finite(tree, what):
  for leaf in jax.tree.leaves(tree):
    leaf = np.asarray(leaf, np.float32) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf
    if np.issubdtype(np.asarray(leaf).dtype, np.floating):
      assert np.all(np.isfinite(leaf)), f"{what}: non-finite values"


def assert_like(out, ref, what):
  assert jax.tree.structure(out) == jax.tree.structure(ref), what
  for o, r in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
    assert o.shape == r.shape and o.dtype == r.dtype, (what, o.shape, o.dtype, r.shape, r.dtype)


# ---------------------------------------------------------------------------------------------
# Transforms


@functools.cache
def toy_model():
  model = mmreg.mlp_classifier({"a": 5, "b": 3}, K, hidden=(4,), feature_dim=4)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return model, params, mmreg.param_labels(model)


def tree_from_flat(flat: np.ndarray, template, dtype) -> dict:
  """Split a flat vector (or `[L, N]` rows) into the leaves of `template`."""
  leaves, treedef = jax.tree.flatten(template)
  out, start = [], 0
  for leaf in leaves:
    n = leaf.size
    part = flat[..., start:start + n]
    out.append(jnp.asarray(part.reshape(*flat.shape[:-1], *leaf.shape), dtype))
    start += n
  return jax.tree.unflatten(treedef, out)


def transform_inputs(family: str, dtype: str, seed: int, *, tie: bool = False) -> dict:
  """Updates, two parameter snapshots, the per-loss stack and the batch extras of one example.

  `updates` is the plain sum of the stack's rows, as the train step builds it. `tie=True` gives
  both modalities the same logits, so no modality is more confident than the other.
  """
  _, params, _ = toy_model()
  rng = np.random.default_rng(seed)
  n = sum(x.size for x in jax.tree.leaves(params))
  rows = family_rows(family, rng, L, n)
  d_fused = params["head"]["kernel"].shape[0]
  logit_rows = family_rows(family, rng, 2, B * K).reshape(2, B, K)
  if tie:
    logit_rows[1] = logit_rows[0]
  feats = family_rows(family, rng, 2, B * 4).reshape(2, B, 4)
  stack = tree_from_flat(rows, params, dtype)
  return {
      "updates": jax.tree.map(lambda g: jnp.sum(g.astype(jnp.float32), 0).astype(dtype), stack),
      "stack": stack,
      "params": (tree_from_flat(family_rows(family, rng, 1, n)[0], params, dtype),
                 tree_from_flat(family_rows(family, rng, 1, n)[0], params, dtype)),
      "logits": {"a": jnp.asarray(logit_rows[0], dtype), "b": jnp.asarray(logit_rows[1], dtype)},
      "features": {"a": jnp.asarray(feats[0], dtype), "b": jnp.asarray(feats[1], dtype)},
      "penultimate": jnp.asarray(family_rows(family, rng, 1, B * d_fused).reshape(B, d_fused),
                                 dtype),
      "labels": jnp.asarray(np.arange(B) % K, jnp.int32),
  }


def _features_vjp(delta):
  """A fixed linear map from feature cotangents to a parameter-shaped tree (for MGDA-UB)."""
  _, params, _ = toy_model()
  total = sum(jnp.sum(d.astype(jnp.float32)) for d in delta.values())
  return jax.tree.map(lambda p: jnp.full(p.shape, total, jnp.float32), params)


def make_transform(name: str, **options):
  _, _, labels = toy_model()
  factories = {
      "ogm_ge": lambda: mmreg.ogm_ge(labels, **options),
      "inforeg": lambda: mmreg.inforeg(labels, **options),
      "agm": lambda: mmreg.agm(labels, apply_to="encoders", **options),
      "redreg": lambda: mmreg.redreg(labels, total_epochs=3, probe_every=0, **options),
      "redreg_subspace": lambda: mmreg.redreg(labels, total_epochs=3, probe_every=0,
                                              variant="subspace", **options),
      "mmpareto": lambda: mmreg.mmpareto(labels, **options),
      "dgl": lambda: mmreg.dgl(labels, **options),
      "pcgrad": lambda: mmreg.pcgrad(**options),
      "mgda": lambda: mmreg.mgda(**options),
      "mgda_ub": lambda: mmreg.mgda_ub(**options),
      "spa_proj": lambda: mmreg.spa_proj(labels, **options),
      "spa_proj_conflict_only": lambda: mmreg.spa_proj(labels, variant="conflict_only",
                                                        **options),
      "track_class_centres": lambda: mmreg.track_class_centres(labels, **options),
      "spa_reg": lambda: mmreg.spa_reg(labels, **options),
  }
  return factories[name]()


@functools.cache
def jitted_two_steps(name: str, options: tuple = ()):
  """init + two updates (two parameter snapshots, same epoch), jitted once per transform; the
  updates are one `lax.scan` body, so the program holds the transform's update once."""
  tx = make_transform(name, **dict(options))

  @jax.jit
  def run(inputs):
    stack = mmreg.LossGrads(grads=inputs["stack"], names=LOSSES)
    feature_grads = mmreg.LossGrads(
        grads={m: jnp.stack([f] * L) for m, f in inputs["features"].items()}, names=LOSSES)
    extras = dict(loss_grads=stack, modality_logits=inputs["logits"], labels=inputs["labels"],
                  features=inputs["features"], shapley_logits=inputs["logits"],
                  penultimate=inputs["penultimate"], epoch=jnp.asarray(0, jnp.int32),
                  feature_grads=feature_grads, features_vjp=_features_vjp)
    snapshots = jax.tree.map(lambda *p: jnp.stack(p), *inputs["params"])

    def update(state, params):
      out, state = tx.update(inputs["updates"], state, params, **extras)
      return state, out

    state, outs = jax.lax.scan(update, tx.init(inputs["params"][0]), snapshots)
    first, second = (jax.tree.map(lambda x, i=i: x[i], outs) for i in range(2))
    return first, second, state

  return run


TRANSFORMS = ["ogm_ge", "inforeg", "agm", "redreg", "redreg_subspace", "mmpareto", "dgl",
              "pcgrad", "mgda", "mgda_ub", "spa_proj", "spa_proj_conflict_only",
              "track_class_centres", "spa_reg"]


def test_every_transform_is_covered():
  factories = {n for n in mmreg.transforms.__all__ if n[0].islower()} - {
      # helpers of the transforms, not transforms: covered through them
      "agm_coefficients", "find_class_centres", "min_norm_weights", "ogm_coefficients",
      "pcgrad_coefficients", "project_toward_centres", "slerp_rate", "slerp_toward_centres",
      "two_task_min_norm",
      # post-update hooks on parameters, not gradient transforms: see test_spa_slerp_hook
      "spa_slerp", "spa_slerp_hook"}
  assert factories <= {n.removesuffix("_reference") for n in TRANSFORMS}


@pytest.mark.parametrize("name", TRANSFORMS)
@each_case
def test_transform_finite_shapes_dtypes(name, case, seed):
  family, dtype = case
  inputs = transform_inputs(family, dtype, seed)
  first, second, state = jitted_two_steps(name)(inputs)
  for out in (first, second):
    assert_like(out, inputs["updates"], name)
    assert_finite(out, f"{name} updates ({family}, {dtype})")
  assert_finite(state, f"{name} state ({family}, {dtype})")


def _f32(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _assert_same(out, ref, what, rtol):
  """Equal up to `rtol` of each leaf's largest entry (exactly equal for rtol = 0)."""
  for o, r in zip(_f32(out), _f32(ref), strict=True):
    np.testing.assert_allclose(o, r, rtol=rtol, atol=rtol * np.max(np.abs(r), initial=0.0),
                               err_msg=what)


@pytest.mark.parametrize("name, options", [
    # OGM-GE without the GE noise, shifted coefficient: equal confidences give ρ = 1, k = 1
    # (the authors' coefficient modulates the first modality on a tie, as their code does).
    ("ogm_ge", (("generalization_enhancement", False), ("coefficient", "shifted"))),
    # RedReg, InfoReg: no strictly dominant modality, nothing is regulated.
    ("redreg", ()), ("redreg_subspace", ()), ("inforeg", ()),
    # AGM without its gradient clipping: equal scores give r = r̄ = 1 and k = 1.
    ("agm", (("clip_grad_norm", None),)),
    # track_class_centres never changes the updates.
    ("track_class_centres", ()),
])
@each_case
def test_tie_is_a_no_op(name, options, case, seed):
  family, dtype = case
  inputs = transform_inputs(family, dtype, seed, tie=True)
  first, second, _ = jitted_two_steps(name, options)(inputs)
  _assert_same(first, inputs["updates"], name, rtol=0)
  _assert_same(second, inputs["updates"], name, rtol=0)


@pytest.mark.parametrize("name", ["pcgrad", "mgda", "mmpareto", "mgda_ub"])
@given(dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1.0, 1e30, 1e-30]))
@SETTINGS
def test_agreeing_gradients_keep_the_plain_sum(name, dtype, seed, scale):
  """Positive multiples of one gradient (no conflict): PCGrad projects nothing, MGDA and
  MGDA-UB with scale="num_losses" return the plain sum when the gradients are equal, MMPareto
  takes the equal weights (cos > 0), γ·(g_fused + g_m) on the encoders up to the norm rescaling."""
  inputs = transform_inputs("collinear", dtype, seed)
  stack = inputs["stack"]
  if name in ("mgda", "mgda_ub"):  # equal rows
    stack = jax.tree.map(lambda g: jnp.broadcast_to(g[:1], g.shape), stack)
  stack = jax.tree.map(lambda g: (g.astype(jnp.float32) * scale).astype(dtype), stack)
  inputs["stack"] = stack
  inputs["features"] = {m: (f.astype(jnp.float32) * scale).astype(dtype)  # MGDA-UB's rows
                        for m, f in inputs["features"].items()}
  inputs["updates"] = jax.tree.map(lambda g: jnp.sum(g.astype(jnp.float32), 0).astype(dtype),
                                   stack)
  options = (("scale", "num_losses"),) if name in ("mgda", "mgda_ub") else ()
  first, _, _ = jitted_two_steps(name, options)(inputs)
  rtol = 1e-5 if dtype == "float32" else 2e-2
  if name != "mmpareto":
    _assert_same(first, inputs["updates"], name, rtol=rtol)
    return
  _, _, labels = toy_model()
  lab = mmreg.tree.flat_labels(labels, inputs["updates"])
  rows = jax.tree.leaves(stack)
  for o, u, r, m in zip(_f32(first), _f32(inputs["updates"]), rows, lab, strict=True):
    if m in ("a", "b"):
      r = np.asarray(r, np.float64)
      # equal weights: g̃ = g_fused + g_m, rescaled to ‖updates‖ when that is longer
      t = r[0] + r[LOSSES.index(m)]
      expected = 1.5 * t * max(1.0, np.linalg.norm(u / scale) / np.linalg.norm(t / scale))
      np.testing.assert_allclose(o, expected, rtol=2 * rtol,
                                 atol=2 * rtol * np.max(np.abs(expected)), err_msg=m)
    else:
      np.testing.assert_allclose(o, u, rtol=0, atol=0)
