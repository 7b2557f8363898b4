import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mmreg
from mmreg.losses import agm_losses
from mmreg.models import zero_input_shapley_logits
from mmreg.train import init_train_state, make_train_step, split_model

SHAPES = {("encoders", "a", "kernel"): (3, 2), ("encoders", "b", "kernel"): (4, 3),
          ("head", "kernel"): (5, 3), ("head", "bias"): (3,)}
LABELS = {"encoders": {"a": {"kernel": "a"}, "b": {"kernel": "b"}},
          "head": {"kernel": "head", "bias": "head"}}


def _tree(rng, scale=1.0):
  out = {"encoders": {"a": {}, "b": {}}, "head": {}}
  for path, shape in SHAPES.items():
    node = out
    for k in path[:-1]:
      node = node[k]
    node[path[-1]] = jnp.asarray(scale * rng.normal(size=shape), jnp.float32)
  return out


def _get(t, path):
  for k in path:
    t = t[k]
  return np.asarray(t, np.float64)


def _softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def oracle_agm(steps, alpha):
  """lihong2303/AGM_ICCV2023:run/CREMAD_main.py:130-155, transcribed: per step the clipped CE
  scores, ratios, coefficients from the cumulative means (starting at 0, l. 612-613), then the
  cumulative means updated. Audio = modality "a"."""
  train_score_a = train_score_v = 0.0
  out = []
  for iteration, (out_a, out_v, label) in enumerate(steps, start=1):
    score_audio = score_visual = 0.0
    pa, pv = _softmax(out_a), _softmax(out_v)
    with np.errstate(divide="ignore"):
      for k in range(out_a.shape[0]):
        p = pa[k][label[k]]
        score_audio += -np.log(1e-8) if np.isinf(np.log(p)) or p < 1e-8 else -np.log(p)
        p = pv[k][label[k]]
        score_visual += -np.log(1e-8) if np.isinf(np.log(p)) or p < 1e-8 else -np.log(p)
    score_audio /= out_a.shape[0]
    score_visual /= out_v.shape[0]
    ratio_a = np.exp(score_visual - score_audio)
    ratio_v = np.exp(score_audio - score_visual)
    optimal_ratio_a = np.exp(train_score_v - train_score_a)
    optimal_ratio_v = np.exp(train_score_a - train_score_v)
    coeff_a = np.exp(alpha * min(optimal_ratio_a - ratio_a, 10))
    coeff_v = np.exp(alpha * min(optimal_ratio_v - ratio_v, 10))
    train_score_a = train_score_a * (iteration - 1) / iteration + score_audio / iteration
    train_score_v = train_score_v * (iteration - 1) / iteration + score_visual / iteration
    out.append(np.array([coeff_a, coeff_v]))
  return out


@pytest.mark.parametrize("scale, alpha", [(1.0, 1.0), (3.0, 0.5), (1e30, 1.0), (1e-30, 2.0)])
def test_coefficients_match_the_code_over_steps(scale, alpha):
  rng = np.random.default_rng(0)
  steps = []
  for t in range(6):  # modality a grows more confident over the steps
    y = rng.integers(0, 4, 8)
    out_a = scale * (rng.normal(size=(8, 4)) + t * np.eye(4)[y])
    out_v = scale * rng.normal(size=(8, 4))
    steps.append((out_a, out_v, y))
  want = oracle_agm(steps, alpha)
  g = _tree(rng, 0.1)  # head gradient entries below 1: no clipping
  tx = mmreg.agm(LABELS, alpha=alpha, apply_to="encoders")
  update = jax.jit(tx.update)
  state = tx.init(g)
  for (out_a, out_v, y), k in zip(steps, want, strict=True):
    phi = {"a": jnp.asarray(out_a, jnp.float32), "b": jnp.asarray(out_v, jnp.float32)}
    out, state = update(g, state, shapley_logits=phi, labels=jnp.asarray(y))
    np.testing.assert_allclose(state.diagnostics["coefficient"], k, rtol=2e-4, atol=1e-30)
    for path in SHAPES:
      factor = {"a": k[0], "b": k[1]}.get(path[1], 1.0) if path[0] == "encoders" else 1.0
      np.testing.assert_allclose(_get(out, path), factor * _get(g, path), rtol=2e-4, atol=1e-30)
  if scale == 1.0:
    assert want[-1][0] < 0.9 < 1.1 < want[-1][1]  # a pulls ahead: slowed; b boosted


def test_coefficients_move_away_from_one_when_a_modality_dominates():
  """Train a concat MLP where modality a carries the label and b is noise, with the authors'
  form (zero-input Shapley outputs, hooks through the loss split): the coefficients leave 1."""
  rng = np.random.default_rng(0)
  n, K = 64, 3
  y = rng.integers(0, K, n)
  batch = {"a": jnp.asarray(np.eye(K)[y] * 3 + 0.3 * rng.normal(size=(n, K)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32), "label": jnp.asarray(y)}
  model = mmreg.mlp_classifier({"a": K, "b": 4}, K, hidden=(8,), feature_dim=4,
                               modality_logits="zero_input_shapley")
  tx = optax.chain(mmreg.agm(mmreg.param_labels(model)), optax.sgd(0.1))
  graphdef, state = init_train_state(model, tx, 0)
  step = make_train_step(graphdef, agm_losses(model.modalities), tx, steps_per_epoch=100,
                         with_loss_grads=True)
  coefficients = []
  for _ in range(8):
    state, _ = step(state, batch)
    coefficients.append(np.asarray(state.opt_state[0].diagnostics["coefficient"]))
  coefficients = np.array(coefficients)
  assert np.all(np.isfinite(coefficients))
  assert np.max(np.abs(coefficients - 1.0)) > 0.2
  assert np.mean(coefficients[1:, 0]) < 1.0 < np.mean(coefficients[1:, 1])


def test_zero_input_shapley_outputs_match_the_code(rng):
  W1, W2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))

  def f(a, v):  # a non-additive fused model
    return np.tanh(a @ W1) * (1 + np.tanh(v @ W2)) + v @ W2
  a, v = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
  # lihong2303/AGM_ICCV2023:model/CREMAD_net.py:10-17 with pad_* = zeroed inputs (l. 101-105).
  total, pad_visual, pad_audio = f(a, v), f(a, 0 * v), f(0 * a, v)
  want_a = 0.5 * (total - pad_audio + pad_visual)
  want_v = 0.5 * (total - pad_visual + pad_audio)
  inputs = {"a": a, "v": v}
  got = zero_input_shapley_logits(
      lambda s: f(*(inputs[m] if m in s else 0 * inputs[m] for m in "av")), ("a", "v"))
  np.testing.assert_allclose(got["a"], want_a, rtol=1e-12)
  np.testing.assert_allclose(got["v"], want_v, rtol=1e-12)
  x = {m: rng.normal(size=(4, 2)) for m in "xyz"}

  def g(s):
    h = {m: x[m] if m in s else 0 * x[m] for m in "xyz"}
    return np.sin(h["x"] * h["y"]) + h["z"] ** 2 + h["x"]
  out = zero_input_shapley_logits(g, ("x", "y", "z"))
  np.testing.assert_allclose(sum(out.values()), g(frozenset("xyz")), rtol=1e-12)
  # Shapley value plus v(∅)/M (the symmetric x·y term split in half).
  np.testing.assert_allclose(out["z"], x["z"] ** 2, rtol=1e-12)


def test_model_option_runs_the_model_on_zeroed_inputs(rng):
  model = mmreg.mlp_classifier({"a": 5, "b": 3}, 4, hidden=(6,), feature_dim=3,
                               modality_logits="zero_input_shapley")
  batch = {"a": jnp.asarray(rng.normal(size=(7, 5)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)}
  graphdef, params, rest = split_model(model)
  apply = jax.jit(lambda b: nnx.merge(graphdef, params, rest)(b))
  out = apply(batch)
  total = np.asarray(out.logits)
  pad_visual = np.asarray(apply({"a": batch["a"], "b": jnp.zeros_like(batch["b"])}).logits)
  pad_audio = np.asarray(apply({"a": jnp.zeros_like(batch["a"]), "b": batch["b"]}).logits)
  np.testing.assert_allclose(out.modality_logits["a"], 0.5 * (total - pad_audio + pad_visual),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.modality_logits["b"], 0.5 * (total - pad_visual + pad_audio),
                             rtol=1e-5, atol=1e-5)


def test_loss_split_rows_rescaled_equal_the_hooked_gradient(rng):
  """The authors' hooks multiply the cotangent of each out_m by k_m
  (model/CREMAD_net.py:45-51): grad = Σ_m vjp(out_m)(k_m·δ), δ = ∂CE/∂z. Computed here with one
  VJP per output, against mmreg's per-loss stack rows rescaled by the transform."""
  model = mmreg.mlp_classifier({"a": 5, "b": 3}, 4, hidden=(6,), feature_dim=3,
                               modality_logits="zero_input_shapley")
  batch = {"a": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 4, 8))}
  graphdef, params, rest = split_model(model)
  spec = agm_losses(model.modalities)

  def outputs(p):
    return nnx.merge(graphdef, p, rest)({m: batch[m] for m in "ab"})

  def losses(p):
    return spec(outputs(p), batch), outputs(p)

  values, stack, out = jax.jit(lambda p: mmreg.per_loss_grads(losses, p, has_aux=True))(params)
  ce = mmreg.losses.cross_entropy(out.logits, batch["label"])
  np.testing.assert_allclose(sum(values.values()), ce, rtol=1e-6)
  total = stack.weighted_sum(spec.weights)
  plain = jax.jit(jax.grad(lambda p: mmreg.losses.cross_entropy(outputs(p).logits,
                                                                batch["label"])))(params)
  for x, y in zip(jax.tree.leaves(total), jax.tree.leaves(plain), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)  # the split sums to the fused CE

  tx = mmreg.agm(mmreg.param_labels(model), clip_grad_norm=None)
  new, state = jax.jit(tx.update)(total, tx.init(params), modality_logits=out.modality_logits,
                                  labels=batch["label"], loss_grads=stack)
  k = np.asarray(state.diagnostics["coefficient"])
  z = np.asarray(out.logits, np.float64)
  delta = (_softmax(z) - np.eye(4)[np.asarray(batch["label"])]) / 8

  @jax.jit
  def hooked_gradient(p, cotangents):
    total = None
    for m in "ab":
      _, vjp = jax.vjp(lambda q, m=m: outputs(q).modality_logits[m], p)
      (g,) = vjp(cotangents[m])
      total = g if total is None else jax.tree.map(jnp.add, total, g)
    return total

  hooked = hooked_gradient(params, {m: jnp.asarray(k[i] * delta, jnp.float32)
                                    for i, m in enumerate("ab")})
  for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(hooked), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_gradient_clipping_when_the_head_gradient_exceeds_one(rng):
  g = _tree(rng, 3.0)
  phi = {m: jnp.zeros((4, 3)) for m in "ab"}  # equal scores: k = 1
  y = jnp.asarray([0, 1, 2, 0])
  tx = mmreg.agm(LABELS, apply_to="encoders")
  update = jax.jit(tx.update)
  out, state = update(g, tx.init(g), shapley_logits=phi, labels=y)
  # torch.nn.utils.clip_grad_norm_(max_norm=1.0): factor min(1, 1 / (‖g‖ + 1e-6)).
  norm = np.sqrt(sum(np.sum(_get(g, p) ** 2) for p in SHAPES))
  for path in SHAPES:
    np.testing.assert_allclose(_get(out, path), _get(g, path) / (norm + 1e-6), rtol=1e-5)
  assert float(state.diagnostics["clipped"]) == 1.0
  small = jax.tree.map(lambda x: x / 100, g)  # head entries below 1: untouched
  out, state = update(small, tx.init(g), shapley_logits=phi, labels=y)
  for path in SHAPES:
    np.testing.assert_allclose(_get(out, path), _get(small, path), rtol=1e-6)


def test_logits_fn_on_zeroed_inputs_and_errors(rng):
  g = _tree(rng, 0.1)
  W = {m: jnp.asarray(rng.normal(size=(5, 3)), jnp.float32) for m in "ab"}
  inputs = {m: jnp.asarray(rng.normal(size=(4, 5)), jnp.float32) for m in "ab"}

  def logits_fn(batch):
    return jnp.tanh(batch["a"] @ W["a"]) + batch["b"] @ W["b"] + 1.0

  y = jnp.asarray([0, 1, 2, 0])
  tx = mmreg.agm(LABELS, apply_to="encoders")
  _, s1 = tx.update(g, tx.init(g), logits_fn=logits_fn, inputs=inputs, labels=y)
  zero = {m: jnp.zeros_like(x) for m, x in inputs.items()}
  f = {s: logits_fn({m: inputs[m] if m in s else zero[m] for m in "ab"})
       for s in ("ab", "a", "b")}
  phi = {"a": 0.5 * (f["ab"] - f["b"] + f["a"]), "b": 0.5 * (f["ab"] - f["a"] + f["b"])}
  _, s2 = tx.update(g, tx.init(g), shapley_logits=phi, labels=y)
  np.testing.assert_allclose(s1.running, s2.running, rtol=1e-5)
  with pytest.raises(ValueError, match="`logits_fn` extra"):
    tx.update(g, tx.init(g), labels=y)
  exact = mmreg.agm(LABELS)
  with pytest.raises(ValueError, match=r"needs the per-loss gradient rows \['agm_a', 'agm_b'\]"):
    exact.update(g, exact.init(g), modality_logits=phi, labels=y)
  with pytest.raises(ValueError, match="unknown apply_to"):
    mmreg.agm(LABELS, apply_to="heads")
  with pytest.raises(ValueError, match="at least 2 modalities"):
    agm_losses(("a",))
