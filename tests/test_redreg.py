"""RedReg against a NumPy oracle transcribed from the authors' code.

Source: xia-zhe/RedReg, main_RedReg.py (line numbers below). The oracle is an independent
transcription of `train_epoch`'s per-step logic for two modalities, in float64.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from balance_toys import (
  SHAPES,
  block,
  flat,
  flat_labels,
  labels,
  logits_with_confidence,
  loss_grads,
  tree,
)

import mmreg

EPS = 1e-12  # main_RedReg.py:101 and :307


@functools.cache
def _transform(options: tuple = ()):
  """RedReg without the probe (total_epochs=3) and its jitted update, one compile per options:
  `update(g, state, params, epoch, logits, y, features, loss_grads)`."""
  tx = mmreg.redreg(labels(), total_epochs=3, probe_every=0, **dict(options))

  @jax.jit
  def update(g, state, params, epoch, logits, y, features, stack=None):
    return tx.update(g, state, params, epoch=epoch, modality_logits=logits, labels=y,
                     features=features, loss_grads=stack)

  return tx, update


def _two_steps(options, g, p0, p1, conf, features=None, stack=None, epoch1=0):
  """Step at p0 (sets the anchor), then at p1; returns (update, state) of the second."""
  tx, update = _transform(tuple(sorted(options.items())))
  logits, y = logits_with_confidence(conf)
  features = features or {m: jnp.ones((4, 6)) for m in "ab"}
  _, state = update(g, tx.init(p0), p0, 0, logits, y, features, stack)
  return update(g, state, p1, epoch1, logits, y, features, stack)


class AuthorsRedReg:
  """main_RedReg.py `train_epoch` for modalities (a, b) = (audio, visual), one step at a time.

  Per epoch (locals of train_epoch, :94-95): confidence histories and the redundancy EMAs
  start empty / at 0, and the anchor is a copy of the model (:124).
  """

  def __init__(self, epochs: int):
    self.epochs = epochs
    self.epoch = None

  @staticmethod
  def growth(hist, W=10):  # _growth_rate, :116-121
    if len(hist) <= W:
      return 1.0
    s1 = sum(hist[-W:]) / W
    s2 = sum(hist[-W - 1:-1]) / W
    return (s1 - s2) / (abs(s2) + EPS)

  def step(self, epoch, grads, params, probs, reds, feats):
    """grads/params: {path: array}; probs: (p_a, p_b); reds: (red_a, red_b) of the probe;
    feats: (h_a, h_b) `[B, d]`. Returns the new gradient {path: array} and the internals."""
    if epoch != self.epoch:  # a new call of train_epoch
      self.epoch, self.hist, self.ema = epoch, ([], []), [0.0, 0.0]
      self.anchor = {k: v.copy() for k, v in params.items()}
    thr = 0.2 + (0.5 - 0.2) * float(epoch) / max(1, self.epochs - 1)  # :103-104
    r = []
    for m in range(2):
      self.hist[m].append(probs[m])  # :190-191
      s = self.growth(self.hist[m])  # :193-194
      self.ema[m] = 0.9 * self.ema[m] + 0.1 * reds[m]  # :221-222
      red_norm = reds[m] / (self.ema[m] + EPS)  # :223-224
      r.append(red_norm - 0.6 * max(s, 0.0))  # :225-226
    pa, pv = probs
    beta = [0.0, 0.0]
    if pa < pv and r[1] > 0.15:  # :228-231
      beta[1] = math.exp(0.9 * math.tanh(max(pv - pa, 0.0)))
    elif pv < pa and r[0] > 0.15:  # :232-235
      beta[0] = math.exp(0.9 * math.tanh(max(pa - pv, 0.0)))
    a_n = feats[0] / np.maximum(np.linalg.norm(feats[0], axis=1, keepdims=True), 1e-12)
    v_n = feats[1] / np.maximum(np.linalg.norm(feats[1], axis=1, keepdims=True), 1e-12)
    pos_sim = float(np.mean(np.sum(a_n * v_n, axis=1)))  # :241-245
    gate = 1.0 if pos_sim > thr else 0.0  # :247
    beta = [b * gate for b in beta]  # :249-250
    out = {}
    for path, g in grads.items():  # :307-326
      d = params[path] - self.anchor[path]
      d_safe = d if np.abs(g).sum() == 0 else d - np.sum(d * g) / (np.sum(g * g) + EPS) * g
      owner = flat_labels()[path]
      out[path] = g + (beta[0] * d_safe if owner == "a" else 0) + (
          beta[1] * d_safe if owner == "b" else 0)
    return out, {"r": r, "sim": pos_sim, "thr": thr, "strength": max(beta)}


def _scaled_orthogonal(rng, c):
  """enc(x) = c·x·Q with Q orthogonal: mean((enc(x1) − enc(x2))²) / mean((x1 − x2)²) = c²
  whatever the noise, so the probe's redundancy is c² exactly."""
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  return jnp.asarray(c * q, jnp.float32)


def _features(rng, agreement, batch=4, width=6):
  h = rng.normal(size=(batch, width))
  other = agreement * h + (1 - agreement) * rng.normal(size=(batch, width))
  return h, other


def test_default_matches_the_authors_code_over_two_epochs():
  rng = np.random.default_rng(3)
  tx = mmreg.redreg(labels(), total_epochs=3)
  oracle = AuthorsRedReg(epochs=3)
  params = tree(rng)
  state = tx.init(params)
  inputs = {m: jnp.asarray(rng.normal(size=(4, 5)), jnp.float32) for m in "ab"}

  @jax.jit
  def update(grads, state, params, epoch, logits, y, feats, enc):
    return tx.update(grads, state, params, epoch=epoch, modality_logits=logits, labels=y,
                     features=feats, inputs=inputs, encode_fn=lambda m, x: x @ enc[m])

  seen_strength, seen_no_trigger, seen_closed = False, False, False
  for t in range(17):
    epoch = 0 if t < 13 else 1
    params = jax.tree.map(lambda p: p + 0.3 * jnp.asarray(rng.normal(size=p.shape), p.dtype),
                          params)
    grads = tree(rng)
    if t == 5:  # a zero gradient tensor: d_safe = d (:315-316)
      grads["encoders"]["a"]["w"] = jnp.zeros_like(grads["encoders"]["a"]["w"])
    probs = rng.uniform(0.2, 0.9, size=2)
    scale = (1.0, 0.1)[t in (7, 8, 15)]  # a drop in redundancy turns the trigger off
    scales = scale * rng.uniform(0.9, 1.1, size=2)
    enc = {m: _scaled_orthogonal(rng, c) for m, c in zip("ab", scales, strict=True)}
    feats = _features(rng, rng.uniform(0.0, 1.0))
    logits, y = logits_with_confidence(list(probs))
    out, state = update(grads, state, params, epoch, logits, y,
                        {m: jnp.asarray(f, jnp.float32) for m, f in zip("ab", feats, strict=True)},
                        enc)
    expected, inner = oracle.step(epoch, flat(grads), flat(params), probs, scales ** 2, feats)
    d = state.diagnostics
    # decisions are taken away from their thresholds, so float32 cannot flip them
    assert min(abs(r - 0.15) for r in inner["r"]) > 1e-3 and abs(inner["sim"] - inner["thr"]) > 1e-3
    np.testing.assert_allclose(d["r"], inner["r"], rtol=1e-4)
    np.testing.assert_allclose(d["similarity"], inner["sim"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d["tau"], inner["thr"], rtol=1e-6)
    np.testing.assert_allclose(d["applied_strength"], inner["strength"], rtol=1e-5)
    for path in SHAPES:
      np.testing.assert_allclose(flat(out)[path], expected[path], rtol=2e-4, atol=2e-5,
                                 err_msg=f"step {t} {path}")
    seen_strength |= inner["strength"] > 0
    seen_no_trigger |= max(inner["r"]) < 0.15
    seen_closed |= inner["sim"] < inner["thr"]
  assert seen_strength and seen_no_trigger and seen_closed  # every branch was exercised


def test_red_norm_restarts_at_ten_each_epoch_and_the_trigger_stays_on():
  """With the authors' EMA (from 0 each epoch, no bias correction) red_norm is 10 on the first
  probe of every epoch and ≈ 1 later: r > R = 0.15 on every step (the always-on trigger)."""
  rng = np.random.default_rng(0)
  p = tree(rng)
  tx = mmreg.redreg(labels(), total_epochs=2)
  enc = {m: _scaled_orthogonal(rng, 1.0) for m in "ab"}
  inputs = {m: jnp.asarray(rng.normal(size=(3, 5)), jnp.float32) for m in "ab"}
  logits, y = logits_with_confidence([0.8, 0.6])
  step = jax.jit(lambda s, epoch: tx.update(p, s, p, epoch=epoch, modality_logits=logits,
                                            labels=y, features={m: jnp.ones((3, 6)) for m in "ab"},
                                            inputs=inputs, encode_fn=lambda m, x: x @ enc[m]))
  state = tx.init(p)
  reds, triggers = [], []
  for epoch in (0, 0, 0, 1):
    _, state = step(state, epoch)
    reds.append(float(state.diagnostics["red"][0]))
    triggers.append(float(state.diagnostics["trigger"]))
  np.testing.assert_allclose(reds, [10.0, 1 / 0.19, 1 / 0.271, 10.0], rtol=1e-4)
  assert triggers == [1.0] * 4


def test_zero_displacement_and_zero_gradient(rng):
  g, p0, p1 = tree(rng), tree(rng), tree(rng)
  beta = math.exp(0.9 * math.tanh(0.3))
  out, _ = _two_steps({}, g, p0, p0, [0.9, 0.6])  # params at the anchor: d = 0
  for path in SHAPES:
    np.testing.assert_array_equal(flat(out)[path], flat(g)[path])
  zero = jax.tree.map(jnp.zeros_like, g)
  out, _ = _two_steps({}, zero, p0, p1, [0.9, 0.6])  # g = 0: d_safe = d (:315-316)
  np.testing.assert_allclose(block(out, "a"), beta * (block(p1, "a") - block(p0, "a")),
                             rtol=1e-5)
  np.testing.assert_array_equal(block(out, "b"), 0.0)


@pytest.mark.parametrize("g_scale, d_scale", [(1e30, 1.0), (1e-30, 1.0), (1.0, 1e30),
                                              (1.0, 1e-30), (1e30, 1e-30)])
def test_extreme_magnitudes_match_the_float64_oracle(rng, g_scale, d_scale):
  g = jax.tree.map(lambda x: x * g_scale, tree(rng))
  p0 = jax.tree.map(jnp.zeros_like, g)
  p1 = jax.tree.map(lambda x: x * d_scale, tree(rng))
  out, _ = _two_steps({}, g, p0, p1, [0.9, 0.6])
  beta = math.exp(0.9 * math.tanh(0.3))
  for path, owner in flat_labels().items():
    gv, d = flat(g)[path], flat(p1)[path]
    expected = gv + beta * (d - np.sum(d * gv) / (np.sum(gv * gv) + EPS) * gv) if owner == "a" \
        else gv
    assert np.all(np.isfinite(flat(out)[path]))
    np.testing.assert_allclose(flat(out)[path], expected, rtol=1e-4,
                               atol=1e-5 * np.max(np.abs(expected)), err_msg=str(path))


def test_three_modalities_regulate_the_strictly_most_confident(rng):
  """mmreg's generalisation: dominant = strict max of p_m, weak = min, gate = mean pairwise
  cosine; only the dominant encoder changes."""
  lab = labels()
  lab["encoders"]["b"]["w"] = "c"  # the toy's b encoder becomes modality c; b keeps nothing
  lab["encoders"]["a"]["b"] = "b"
  g, p0, p1 = tree(rng), tree(rng), tree(rng)
  logits, y = logits_with_confidence([0.5, 0.8, 0.3])
  feats = {m: jnp.ones((4, 6)) for m in "abc"}
  tx = mmreg.redreg(lab, total_epochs=3, probe_every=0, modalities=("a", "b", "c"))
  update = jax.jit(lambda g, s, p: tx.update(g, s, p, epoch=0, modality_logits=logits, labels=y,
                                             features=feats))
  _, state = update(g, tx.init(p0), p0)
  out, state = update(g, state, p1)
  beta = math.exp(0.9 * math.tanh(0.8 - 0.3))
  for path in SHAPES:
    gv, d = flat(g)[path], flat(p1)[path] - flat(p0)[path]
    if path == ("encoders", "a", "b"):
      expected = gv + beta * (d - np.sum(d * gv) / (np.sum(gv * gv) + EPS) * gv)
    else:
      expected = gv
    np.testing.assert_allclose(flat(out)[path], expected, rtol=1e-5, atol=1e-6)
  assert float(state.diagnostics["dominant"]) == 1


def _np_perp(d, vectors):
  V = np.stack(vectors, 1)
  coef, *_ = np.linalg.lstsq(V, d, rcond=1e-6)
  return d - V @ coef


@pytest.mark.parametrize("kind", ["general", "collinear", "zero"])
def test_subspace_variant_removes_the_other_losses_span(rng, kind):
  g, p0, p1 = tree(rng), tree(rng), tree(rng)
  rows = {"fused": tree(rng), "a": tree(rng), "b": tree(rng)}
  if kind == "collinear":
    rows["b"] = jax.tree.map(lambda x: 2.0 * x, rows["fused"])
  if kind == "zero":
    rows["fused"] = jax.tree.map(jnp.zeros_like, rows["fused"])
    rows["b"] = jax.tree.map(jnp.zeros_like, rows["b"])
  out, _ = _two_steps({"variant": "subspace"}, g, p0, p1, [0.9, 0.6], stack=loss_grads(rows))
  beta = np.exp(0.9 * np.tanh(0.3))
  d = block(p1, "a") - block(p0, "a")
  perp = _np_perp(d, [block(rows["fused"], "a"), block(rows["b"], "a")])
  np.testing.assert_allclose(block(out, "a"), block(g, "a") + beta * perp, rtol=2e-4, atol=2e-5)
  np.testing.assert_array_equal(block(out, "b"), block(g, "b"))


@pytest.mark.parametrize("scale", [1.0, 1e30, 1e-30])
def test_subspace_variant_reads_only_the_rows_the_stack_marks_nonzero(rng, scale):
  """With the structured stack's row masks (a unimodal loss never reaches the other encoder)
  only the fused loss's gradient spans the subspace on an encoder: one direction, whose
  coefficient comes from reductions alone; a leaf whose fused row is marked zero counts as 0."""
  g, p0, p1 = tree(rng), tree(rng), tree(rng)
  fused = jax.tree.map(lambda x: scale * x, tree(rng))
  fused["encoders"]["a"]["b"] = jnp.zeros_like(fused["encoders"]["a"]["b"])
  rows = {"fused": fused, "a": tree(rng), "b": tree(rng)}
  rows["a"]["encoders"]["b"] = jax.tree.map(jnp.zeros_like, rows["a"]["encoders"]["b"])
  rows["b"]["encoders"]["a"] = jax.tree.map(jnp.zeros_like, rows["b"]["encoders"]["a"])
  marks = {"a": (True, True, False), "b": (True, False, True)}
  paths = [tuple(k.key for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(g)[0]]
  nonzero = tuple((False, True, False) if path == ("encoders", "a", "b")
                  else marks.get(path[1], (True, True, True)) for path in paths)
  dense = loss_grads(rows)
  stack = mmreg.LossGrads(grads=dense.grads, names=dense.names, nonzero=nonzero)
  out, _ = _two_steps({"variant": "subspace"}, g, p0, p1, [0.9, 0.6], stack=stack)
  beta = np.exp(0.9 * np.tanh(0.3))
  d = block(p1, "a") - block(p0, "a")
  perp = _np_perp(d, [block(fused, "a")])
  np.testing.assert_allclose(block(out, "a"), block(g, "a") + beta * perp, rtol=2e-4, atol=2e-5)
  np.testing.assert_array_equal(block(out, "b"), block(g, "b"))


def _probe_run(tx, reds, p, conf=(0.8, 0.6)):
  """Steps with constant confidences and probe redundancies `reds` (one per step)."""
  rng = np.random.default_rng(1)
  inputs = {m: jnp.asarray(rng.normal(size=(3, 5)), jnp.float32) for m in "ab"}
  logits, y = logits_with_confidence(list(conf))
  q = _scaled_orthogonal(rng, 1.0)
  state = tx.init(p)
  step = jax.jit(lambda s, c: tx.update(p, s, p, epoch=0, modality_logits=logits, labels=y,
                                        features={m: jnp.ones((3, 6)) for m in "ab"},
                                        inputs=inputs, encode_fn=lambda m, x: c * (x @ q)))
  out = []
  for red in reds:
    _, state = step(state, jnp.sqrt(jnp.float32(red)))
    out.append({k: np.asarray(v) for k, v in state.diagnostics.items()})
  return out


def test_calibrated_trigger_ignores_a_steady_score_and_fires_on_a_spike(rng):
  p = tree(rng)
  logits, y = logits_with_confidence([0.8, 0.6])
  feats = {m: jnp.ones((3, 6)) for m in "ab"}
  steady = {}
  for trigger in ("fixed", "calibrated"):  # no probe: red_norm = 1, S = 0 after the window
    tx = mmreg.redreg(labels(), total_epochs=2, probe_every=0, trigger=trigger)
    step = jax.jit(lambda s, tx=tx: tx.update(p, s, p, epoch=0, modality_logits=logits,
                                              labels=y, features=feats))
    state, fired = tx.init(p), []
    for _ in range(25):
      _, state = step(state)
      fired.append(float(state.diagnostics["trigger"]))
    steady[trigger] = fired
  assert steady == {"fixed": [1.0] * 25, "calibrated": [0.0] * 25}  # r = 0.4, then 1.0 > 0.15
  calibrated = mmreg.redreg(labels(), total_epochs=2, trigger="calibrated")
  noisy = list(np.random.default_rng(2).uniform(0.9, 1.1, size=20))
  fired = [int(d["trigger"]) for d in _probe_run(calibrated, [*noisy, 4.0, *noisy[:3]], p)]
  assert fired[20] == 1  # the redundancy jump
  assert sum(fired[:20]) <= 3 and sum(fired[21:]) == 0
  warm = _probe_run(calibrated, [1.0, 1.0, 4.0, 1.0], p)  # S not yet a rate: no decision
  assert all(d["trigger"] == 0 for d in warm)
  assert all(np.isposinf(d["r_threshold"]) for d in warm)


def test_shuffled_gate_closes_for_unrelated_nonnegative_features(rng):
  """Independent post-ReLU-like features have a paired cosine ≈ 2/π ≈ 0.64 > τ: the authors'
  gate opens although the modalities share nothing; the shuffled gate stays closed. Features
  that agree sample by sample open both."""
  g, p0 = tree(rng), tree(rng)
  logits, y = logits_with_confidence([0.9, 0.6])
  a = np.abs(rng.normal(size=(256, 32)))
  cases = {"unrelated": np.abs(rng.normal(size=(256, 32))),
           "paired": a + 0.1 * np.abs(rng.normal(size=(256, 32)))}
  for name, b in cases.items():
    feats = {"a": jnp.asarray(a, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    gates = {}
    for gate in ("fixed", "shuffled"):
      tx, update = _transform((("gate", gate),))
      _, state = update(g, tx.init(p0), p0, 2, logits, y, feats)
      gates[gate] = float(state.diagnostics["gate"])
      if gate == "shuffled":
        baseline = float(state.diagnostics["shuffled_similarity"])
        np.testing.assert_allclose(baseline, 2 / np.pi if name == "unrelated" else baseline,
                                   atol=0.03)
    assert gates == ({"fixed": 1.0, "shuffled": 0.0} if name == "unrelated"
                     else {"fixed": 1.0, "shuffled": 1.0}), name


def _toggling_inputs(rng, steps=4):
  """Per step: gradient, params, confidences and features; the gate opens on even steps."""
  out = []
  for t in range(steps):
    h = rng.normal(size=(4, 6))
    other = h if t % 2 == 0 else -h
    out.append((tree(rng), tree(rng), [0.9, 0.6] if t % 3 else [0.4, 0.7],
                {"a": jnp.asarray(h, jnp.float32), "b": jnp.asarray(other, jnp.float32)}))
  return out


@pytest.mark.parametrize("variant", ["authors", "subspace"])
def test_skipping_the_projection_changes_nothing(rng, variant):
  """The projection's reductions branch on the dominant modality and are skipped when the
  applied strength is 0 (`lax.switch`). Under `jax.vmap` (two copies of every input, so the
  branch index is batched) the switch becomes a select that evaluates every branch, i.e. the
  computation without the skip: where the skip is taken the results are bitwise equal."""
  tx, update = _transform((("variant", variant),))
  rows = loss_grads({"fused": tree(rng), "a": tree(rng), "b": tree(rng)})
  p0 = tree(rng)
  y = logits_with_confidence([0.5, 0.5])[1]
  two = lambda t: jax.tree.map(lambda x: jnp.stack([x, x]), t)  # noqa: E731
  every_branch = jax.jit(jax.vmap(update, in_axes=(0, 0, 0, None, 0, None, 0, None)))
  state, both = tx.init(p0), two(tx.init(p0))
  skipped = []
  for g, p, conf, feats in _toggling_inputs(rng):
    logits = logits_with_confidence(conf)[0]
    out, state = update(g, state, p, 0, logits, y, feats, rows)
    out_all, both = every_branch(two(g), both, two(p), 0, two(logits), y, two(feats), rows)
    strength = float(state.diagnostics["applied_strength"])
    np.testing.assert_array_equal(np.asarray(both.diagnostics["applied_strength"]), strength)
    for path in SHAPES:
      mine, reference = flat(out)[path], flat(jax.tree.map(lambda x: x[0], out_all))[path]
      if strength == 0:
        np.testing.assert_array_equal(mine, reference)
        np.testing.assert_array_equal(mine, flat(g)[path])
      else:
        np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-7)
    skipped.append(strength == 0)
  assert any(skipped) and not all(skipped)  # both the skipped and the applied case occur
  jaxpr = jax.make_jaxpr(update)(g, state, p, 0, logits, y, feats, rows).jaxpr
  inner = jaxpr.eqns[0].params["jaxpr"].jaxpr  # inside the jit
  branches = [len(e.params["branches"]) for e in inner.eqns if e.primitive.name == "cond"]
  assert 3 in branches  # one branch per modality and one that leaves the gradient alone


def test_diagnostics_report_the_applied_strength_not_beta(rng):
  g, p0 = tree(rng), tree(rng)
  logits, y = logits_with_confidence([0.9, 0.6])
  h = rng.normal(size=(4, 6))
  tx, update = _transform()
  _, state = update(g, tx.init(p0), p0, 0, logits, y,
                    {"a": jnp.asarray(h, jnp.float32), "b": jnp.asarray(-h, jnp.float32)})
  d = state.diagnostics
  assert float(d["gate"]) == 0 and float(d["trigger"]) == 1
  np.testing.assert_allclose(d["beta"], math.exp(0.9 * math.tanh(0.3)), rtol=1e-6)
  assert float(d["applied_strength"]) == 0.0
  np.testing.assert_allclose(d["similarity"], -1.0, rtol=1e-6)
  np.testing.assert_allclose(d["tau"], 0.2, rtol=1e-6)


def test_anchor_is_reset_at_each_epoch(rng):
  g, p0, p1 = tree(rng), tree(rng), tree(rng)
  out, state = _two_steps({}, g, p0, p1, [0.9, 0.6], epoch1=1)
  # New epoch: the anchor becomes p1 itself, so d = 0 and the update is untouched.
  np.testing.assert_array_equal(block(out, "a"), block(g, "a"))
  np.testing.assert_allclose(block(state.anchor, "a"), block(p1, "a"))


def test_probe_every_skips_steps_and_keeps_the_last_value(rng):
  p = tree(rng)
  logits, y = logits_with_confidence([0.9, 0.6])
  q = _scaled_orthogonal(rng, 1.0)
  inputs = {m: jnp.asarray(rng.normal(size=(4, 5)), jnp.float32) for m in "ab"}
  tx = mmreg.redreg(labels(), total_epochs=10, probe_every=3)
  state = tx.init(p)
  step = jax.jit(lambda s: tx.update(p, s, p, epoch=0, modality_logits=logits, labels=y,
                                     features={m: jnp.ones((4, 6)) for m in "ab"},
                                     inputs=inputs, encode_fn=lambda m, x: x @ q))
  probed, reds = [], []
  for _ in range(7):
    _, state = step(state)
    probed.append(float(state.diagnostics["probed"]))
    reds.append(float(state.diagnostics["red"][0]))
  assert probed == [1, 0, 0, 1, 0, 0, 1]
  np.testing.assert_allclose(reds[:4], [10.0, 10.0, 10.0, 1 / 0.19], rtol=1e-4)


def test_bad_input_errors(rng):
  g, p0 = tree(rng), tree(rng)
  rows = {"fused": tree(rng), "a": tree(rng), "b": tree(rng)}
  logits, y = logits_with_confidence([0.9, 0.6])
  base = dict(modality_logits=logits, labels=y, features={m: jnp.ones((4, 6)) for m in "ab"},
              epoch=0)
  sub = mmreg.redreg(labels(), total_epochs=10, probe_every=0, variant="subspace")
  state = sub.init(p0)
  with pytest.raises(ValueError, match=r"needs the gradients of losses \['b'\]"):
    sub.update(g, state, p0, loss_grads=loss_grads({"fused": rows["fused"], "a": rows["a"]}),
               **base)
  with pytest.raises(ValueError, match="`loss_grads` extra"):
    sub.update(g, state, p0, **base)
  tx = mmreg.redreg(labels(), total_epochs=10)
  with pytest.raises(ValueError, match="`encode_fn` extra"):
    tx.update(g, tx.init(p0), p0, **base)
  with pytest.raises(ValueError, match="current parameters"):
    tx.update(g, tx.init(p0), None, **base)
  with pytest.raises(ValueError, match="at least 2 modalities"):
    mmreg.redreg(labels(), total_epochs=10, modalities=("a",)).init(p0)
  with pytest.raises(ValueError, match="param_labels do not match"):
    mmreg.redreg({"head": {"w": "head"}}, total_epochs=10).init(p0)
  for option in ("variant", "trigger", "gate"):
    with pytest.raises(ValueError, match=f"unknown {option} 'x'"):
      mmreg.redreg(labels(), total_epochs=10, **{option: "x"})
