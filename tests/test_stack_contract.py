"""The contract of the stack methods (PCGrad, MGDA, DGL, MMPareto): one constructor shape, output
on covered leaves from `loss_grads` only, uncovered leaves pass `updates` through; DGL against
its routing written out in NumPy."""

import jax
import numpy as np
import pytest
from balance_toys import SHAPES, add, flat, flat_labels, labels, loss_grads, tree

import mmreg

STACK_METHODS = {
    "pcgrad": lambda: mmreg.pcgrad(labels()),
    "mgda": lambda: mmreg.mgda(labels()),
    "dgl": lambda: mmreg.dgl(labels()),
    "mmpareto": lambda: mmreg.mmpareto(labels()),
}


def _rows(rng):
  return {"fused": tree(rng), "a": tree(rng), "b": tree(rng)}


@pytest.mark.parametrize("factory", [mmreg.pcgrad, mmreg.mgda, mmreg.mgda_ub, mmreg.dgl,
                                     mmreg.mmpareto])
def test_param_labels_first_everything_else_by_keyword(factory):
  with pytest.raises(TypeError, match="looks like loss names: pass them as loss_names"):
    factory(["fused", "a"])
  with pytest.raises(TypeError, match="must be a tree of strings"):
    factory({"w": 3})
  with pytest.raises(TypeError, match="positional"):
    factory(labels(), None)
  factory(labels())


@pytest.mark.parametrize("name", sorted(STACK_METHODS))
def test_covered_leaves_ignore_what_came_before(rng, name):
  """A clip or scale before the method does not reach the leaves the stack covers."""
  rows = _rows(rng)
  total = add(*rows.values())
  tx = STACK_METHODS[name]()
  ref, _ = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  scaled = jax.tree.map(lambda x: 0.25 * x, total)
  out, _ = jax.jit(tx.update)(scaled, tx.init(total), loss_grads=loss_grads(rows))
  touched = {"mmpareto": ("a", "b"), "dgl": ("a", "b", "fusion", "head")}.get(
      name, ("a", "b", "fusion", "head"))
  for path in SHAPES:
    want = flat(ref)[path] if flat_labels()[path] in touched else flat(scaled)[path]
    np.testing.assert_allclose(flat(out)[path], want, rtol=1e-6, err_msg=f"{name} {path}")


@pytest.mark.parametrize("name", sorted(STACK_METHODS))
def test_uncovered_leaves_keep_the_updates(rng, name):
  rows = _rows(rng)
  total = add(*rows.values())
  stack = loss_grads(rows)
  paths = sorted(SHAPES)  # the leaf order of the toy tree
  covered = tuple(p != ("encoders", "a", "b") for p in paths)
  sparse = mmreg.LossGrads(grads=stack.grads, names=stack.names, covered=covered)
  tx = STACK_METHODS[name]()
  out, _ = jax.jit(tx.update)(total, tx.init(total), loss_grads=sparse)
  np.testing.assert_array_equal(flat(out)[("encoders", "a", "b")],
                                flat(total)[("encoders", "a", "b")])
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(out))


def test_stack_must_match_the_updates(rng):
  rows = _rows(rng)
  total = add(*rows.values())
  stack = loss_grads(rows)
  wrong = mmreg.LossGrads(grads=jax.tree.map(lambda g: g[:, :1], stack.grads), names=stack.names)
  tx = mmreg.pcgrad()
  with pytest.raises(ValueError, match="loss_grads does not match the updates"):
    tx.update(total, tx.init(total), loss_grads=wrong)


@pytest.mark.parametrize("weights", [None, {"fused": 0.5, "a": 2.0}])
def test_dgl_routes_each_loss_to_its_parameters(rng, weights):
  """shicaiwei123/ICCV2025-GDL, main_dgl.py:108-122: encoders get alpha·∇(loss_a + loss_v)
  (each encoder only its own loss), the fusion module only ∇loss_f; alpha = 4 (:50)."""
  rows = _rows(rng)
  total = add(*rows.values())
  tx = mmreg.dgl(labels(), loss_weights=weights)
  out, _ = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  route = {"a": ("a", 4.0), "b": ("b", 4.0), "fusion": ("fused", 1.0), "head": ("fused", 1.0)}
  for path in SHAPES:
    loss, alpha = route[flat_labels()[path]]
    w = (weights or {}).get(loss, 1.0)
    np.testing.assert_allclose(flat(out)[path], alpha * w * flat(rows[loss])[path], rtol=1e-6)


def test_losses_not_combined_keep_their_weight(rng):
  """PCGrad on (fused, a) only; b is added with its weight. Two-task PCGrad written out
  (PCGrad_tf.py:44-49: projecting on itself never changes a gradient)."""
  rows = _rows(rng)
  rows["a"] = add(jax.tree.map(lambda x: -2 * x, rows["fused"]), rows["a"])
  total = add(*rows.values())
  tx = mmreg.pcgrad(loss_names=["fused", "a"], loss_weights={"b": 3.0})
  out, _ = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  vec = {n: np.concatenate([flat(t)[p].ravel() for p in sorted(SHAPES)]) for n, t in rows.items()}
  f, a = vec["fused"], vec["a"]
  assert f @ a < 0
  want = (f - (f @ a) / (a @ a) * a) + (a - (a @ f) / (f @ f) * f) + 3.0 * vec["b"]
  got = np.concatenate([flat(out)[p].ravel() for p in sorted(SHAPES)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
