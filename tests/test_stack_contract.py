"""The contract of the stack methods (PCGrad, MGDA, DGL, MMPareto): one constructor shape, output
on covered leaves from `loss_grads` only, uncovered leaves pass `updates` through, incoming
`updates` that are not Σ_k w_k ∇L_k (a transform before, optax.MultiSteps) an error; DGL against
its routing written out in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from balance_toys import SHAPES, add, flat, flat_labels, labels, loss_grads, tree

import mmreg
from mmreg.train import build_method
from mmreg.transforms._stack import StackContractError

STACK_METHODS = {
    "pcgrad": lambda **kw: mmreg.pcgrad(labels(), **kw),
    "mgda": lambda **kw: mmreg.mgda(labels(), **kw),
    "dgl": lambda **kw: mmreg.dgl(labels(), **kw),
    "mmpareto": lambda **kw: mmreg.mmpareto(labels(), **kw),
}


def _weighted_total(rows, weights):
  """Σ_k w_k ∇L_k of toy rows `{loss: tree}` (w_k = 1 unless given)."""
  return add(*(jax.tree.map(lambda x, c=c: c * x, t)
               for t, c in ((rows[n], weights.get(n, 1.0)) for n in rows)))


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
def test_unchecked_covered_leaves_ignore_what_came_before(rng, name):
  """With check_updates=False, a clip or scale before the method silently does not reach the
  leaves the stack covers."""
  rows = _rows(rng)
  total = add(*rows.values())
  tx = STACK_METHODS[name](check_updates=False)
  ref, _ = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  scaled = jax.tree.map(lambda x: 0.25 * x, total)
  out, _ = jax.jit(tx.update)(scaled, tx.init(total), loss_grads=loss_grads(rows))
  touched = {"mmpareto": ("a", "b"), "dgl": ("a", "b", "fusion", "head")}.get(
      name, ("a", "b", "fusion", "head"))
  for path in SHAPES:
    want = flat(ref)[path] if flat_labels()[path] in touched else flat(scaled)[path]
    np.testing.assert_allclose(flat(out)[path], want, rtol=1e-6, err_msg=f"{name} {path}")


def _message(name, rel_pattern=r"[0-9.e+-]+"):
  return (rf"{name}: the incoming updates differ from the weighted sum of its loss_grads by "
          rf"{rel_pattern} \(relative.*tolerance 0.001\).*a transform before {name} in the "
          r"chain.*optax.MultiSteps.*Fix: put such transforms after "
          rf"{name}.*check_updates=False")


@pytest.mark.parametrize("name", sorted(STACK_METHODS))
def test_clip_before_the_method_is_an_error(rng, name):
  rows = _rows(rng)
  total = add(*rows.values())
  clip = optax.clip_by_global_norm(0.5 * float(optax.global_norm(total)))
  misuse = optax.chain(clip, STACK_METHODS[name]())
  # Under jit the host callback raises; the message closes the runtime error's text.
  with pytest.raises(jax.errors.JaxRuntimeError, match=_message(name)) as err:
    jax.block_until_ready(jax.jit(misuse.update)(total, misuse.init(total),
                                                 loss_grads=loss_grads(rows)))
  assert str(err.value).splitlines()[-1].startswith(f"StackContractError: {name}: ")


def test_eager_error_and_correct_chains(rng):
  """Outside jit the error is raised at once, on one line; the clip after the method, or
  check_updates=False, passes."""
  rows = _rows(rng)
  total = add(*rows.values())
  stack = loss_grads(rows)
  clip = optax.clip_by_global_norm(0.5 * float(optax.global_norm(total)))
  misuse = optax.chain(clip, mmreg.pcgrad(labels()))
  with pytest.raises(StackContractError, match=_message("pcgrad")) as err:
    misuse.update(total, misuse.init(total), loss_grads=stack)
  assert "\n" not in str(err.value)
  for ok in (optax.chain(mmreg.mgda(labels()), clip),
             optax.chain(clip, mmreg.mgda(labels(), check_updates=False))):
    out, _ = jax.jit(ok.update)(total, ok.init(total), loss_grads=stack)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(out))


@pytest.mark.parametrize("name", ["pcgrad", "dgl"])
def test_multisteps_is_an_error(rng, name):
  """optax.MultiSteps hands the method the running mean of the micro-batches' updates with the
  last micro-batch's loss_grads: the second micro-batch trips the check."""
  micro = [_rows(rng), _rows(rng)]
  tx = optax.MultiSteps(STACK_METHODS[name](), every_k_schedule=2)
  update = jax.jit(tx.update)
  state = tx.init(add(*micro[0].values()))
  _, state = update(add(*micro[0].values()), state, loss_grads=loss_grads(micro[0]))
  jax.block_until_ready(state)
  with pytest.raises(jax.errors.JaxRuntimeError, match=_message(name)):
    jax.block_until_ready(update(add(*micro[1].values()), state,
                                 loss_grads=loss_grads(micro[1])))


def test_round_off_passes_and_vmap_checks_each_element(rng):
  """float32 round-off (the update summed in another order) and bfloat16 stacks pass; under
  vmap (e.g. one element per seed) one inconsistent element raises."""
  rows = _rows(rng)
  stack = loss_grads(rows)
  reversed_sum = jax.tree.map(lambda *xs: sum(reversed(xs)), *rows.values())
  tx = mmreg.pcgrad(labels())
  jax.block_until_ready(jax.jit(tx.update)(reversed_sum, tx.init(reversed_sum),
                                           loss_grads=stack))
  half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), stack)
  half_total = jax.tree.map(lambda g: jnp.sum(g.astype(jnp.float32), 0).astype(jnp.bfloat16),
                            half.grads)
  jax.block_until_ready(jax.jit(tx.update)(half_total, tx.init(half_total), loss_grads=half))

  total = add(*rows.values())
  batched = jax.tree.map(lambda x: jnp.stack([x, x]), total)
  stacks = jax.tree.map(lambda x: jnp.stack([x, x]), stack)
  step = jax.jit(jax.vmap(lambda u, g: tx.update(u, tx.init(total), loss_grads=g)[0]))
  jax.block_until_ready(step(batched, stacks))
  wrong = jax.tree.map(lambda x: x.at[1].multiply(0.5), batched)
  with pytest.raises(jax.errors.JaxRuntimeError, match=_message("pcgrad", "0.5")):
    jax.block_until_ready(step(wrong, stacks))


def test_loss_weights_must_match_the_updates(rng):
  rows = _rows(rng)
  total = add(*rows.values())
  tx = mmreg.mgda(labels(), loss_weights={"a": 2.0})
  with pytest.raises(StackContractError, match=_message("mgda")):
    tx.update(total, tx.init(total), loss_grads=loss_grads(rows))


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
  total = _weighted_total(rows, weights or {})
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
  total = add(rows["fused"], rows["a"], jax.tree.map(lambda x: 3.0 * x, rows["b"]))
  tx = mmreg.pcgrad(loss_names=["fused", "a"], loss_weights={"b": 3.0})
  out, _ = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  vec = {n: np.concatenate([flat(t)[p].ravel() for p in sorted(SHAPES)]) for n, t in rows.items()}
  f, a = vec["fused"], vec["a"]
  assert f @ a < 0
  want = (f - (f @ a) / (a @ a) * a) + (a - (a @ f) / (f @ f) * f) + 3.0 * vec["b"]
  got = np.concatenate([flat(out)[p].ravel() for p in sorted(SHAPES)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_build_method_passes_the_run_loss_weights(rng):
  """The loop hands the stack methods its LossSpec weights, so its weighted update passes."""
  rows = _rows(rng)
  weights = {"fused": 1.0, "a": 0.5, "b": 0.25}
  total = _weighted_total(rows, weights)
  for name in STACK_METHODS:
    tx = build_method(name, labels(), ("a", "b"), {}, loss_weights=weights)
    jax.block_until_ready(jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows)))


def test_mmpareto_g_sum_uses_the_loss_weights(rng):
  """GeWu-Lab/MMPareto_ICML2024 code/MMPareto.py:165-167, 180-206 with g_sum the gradient of
  Σ_k w_k L_k: for cos > 0, per tensor g̃ = 2(½g_mm + ½g_uni), rescaled to ‖g_sum‖ when that
  is larger, times γ = 1.5 (:178); fusion and head keep the total gradient."""
  fused = tree(rng)
  rows = {"fused": fused, "a": add(fused, tree(rng, 0.1)), "b": add(fused, tree(rng, 0.1))}
  weights = {"fused": 2.0, "b": 3.0}
  total = _weighted_total(rows, weights)
  tx = mmreg.mmpareto(labels(), loss_weights=weights)
  out, state = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  np.testing.assert_array_equal(state.diagnostics["weight_fused"], [0.5, 0.5])
  for path, lab in flat_labels().items():
    if lab not in ("a", "b"):
      np.testing.assert_allclose(flat(out)[path], flat(total)[path], rtol=1e-6)
      continue
    g = flat(rows["fused"])[path] + flat(rows[lab])[path]
    g_sum = sum(weights.get(n, 1.0) * flat(r)[path] for n, r in rows.items())
    if np.linalg.norm(g_sum) > np.linalg.norm(g):
      g = g * np.linalg.norm(g_sum) / np.linalg.norm(g)
    np.testing.assert_allclose(flat(out)[path], 1.5 * g, rtol=1e-5)


def test_updates_from_stack_turns_the_check_off_unless_the_options_set_it(rng):
  """`build_method(..., updates_from_stack=True)` (the training loop's call) skips the check:
  halved updates then pass silently, as with check_updates=False; an explicit option wins."""
  rows = _rows(rng)
  halved = jax.tree.map(lambda x: 0.5 * x, add(*rows.values()))
  for name in STACK_METHODS:
    tx = build_method(name, labels(), ("a", "b"), {}, updates_from_stack=True)
    jax.block_until_ready(tx.update(halved, tx.init(halved), loss_grads=loss_grads(rows)))
    checked = build_method(name, labels(), ("a", "b"), {"check_updates": True},
                           updates_from_stack=True)
    with pytest.raises(StackContractError, match=_message(name)):
      checked.update(halved, checked.init(halved), loss_grads=loss_grads(rows))


def test_check_updates_is_passed_only_to_methods_that_declare_it():
  from mmreg.train.methods import METHODS, register_method

  seen = {}

  def build(param_labels, modalities, **options):
    seen.update(options)
    return optax.identity()

  register_method("_weights_only", build, takes_loss_weights=True)
  try:
    build_method("_weights_only", {}, ("a",), {}, loss_weights={"fused": 1.0},
                 updates_from_stack=True)
  finally:
    del METHODS["_weights_only"]
  assert seen == {"loss_weights": {"fused": 1.0}}
