"""RedReg: redundancy regulation of the dominant modality (arXiv 2511.13755).

The default reproduces the authors' code (xia-zhe/RedReg, main_RedReg.py). Per step: the
Redundancy Phase Monitor scores every modality (`mmreg.monitors.rpm`), the dominance test picks
the dominant modality (strictly largest batch-mean true-class confidence p_m, :187-189, :228,
:232), the co-information gate compares the batch cosine of the modalities' features with
τ(epoch) rising 0.2 → 0.5 (:103-104, :241-247), and the dominant encoder's gradient becomes

  g ← g + β·gate·trigger·d_⊥,   β = exp(0.9·tanh(p_dom − p_weak))   (:229-234, 0.9 at :100)

per parameter tensor, with d = θ − θ^anchor, θ^anchor the weights at the start of the epoch
(:124) and

* `variant="authors"` (default): d_⊥ = d − (⟨d,g⟩/(‖g‖² + 1e-12))·g against that tensor's
  total gradient g (d_⊥ = d where g = 0) (:307-326);
* `variant="subspace"` (mmreg's reading of the abstract's "orthogonal complement of the joint
  multimodal gradient subspace"): d_⊥ is d over the whole dominant encoder with its component
  in the span of the other losses' gradients removed (the fused loss and the other modalities'
  unimodal losses, from `loss_grads`), by a rank-revealing Gram–Schmidt that is safe for zero
  and collinear gradients.

Trigger: r_dom > R = 0.15 (:99). With the authors' monitor r ≈ red_norm ≈ 1 or more, so this
trigger is on at almost every step and only the gate switches RedReg; `trigger="calibrated"`
(mmreg's) compares r_dom with mean(r) + z·std(r) over the run instead. `gate="shuffled"`
(mmreg's) gates on the paired cosine in excess of the cosine of unpaired (shuffled) samples.

The projection is computed as coefficients: d_⊥ = d − Σ_b c_b·v_b (v_b = g per tensor, or the
other losses' gradients), the scalars c_b from reductions under `lax.switch` on the dominant
modality, which skips them when the applied strength β·gate·trigger is 0; the update is then
formed in one elementwise pass over the encoders' tensors, in place of the gradient, and is
exactly the incoming gradient where the strength is 0. The anchor is reset by a select, in
place. Neither stores a copy of a parameter-sized tensor (except the subspace variant when more
than one other loss reaches the encoder: Gram–Schmidt keeps its residuals).

For M > 2 modalities: the dominant modality is the strictly most confident one, the weak one
the least confident, and the gate averages the cosine over all modality pairs (mmreg's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg.losses.spec import FUSED
from mmreg.monitors.dominance import dominance, modality_confidence
from mmreg.monitors.gate import (
  coinformation_gate,
  cross_modal_similarity,
  excess_similarity,
  gate_threshold,
  shuffled_similarity,
)
from mmreg.monitors.rpm import (
  RPMState,
  TriggerCalibration,
  calibrated_threshold,
  calibration_init,
  noise_redundancy,
  push_confidence,
  push_redundancy,
  push_score,
  rpm_init,
  rpm_score,
)
from mmreg.transforms._common import (
  check_loss_stack,
  leaves,
  require,
  require_params,
  resolve_labels,
  unflatten_like,
)
from mmreg.transforms._projection import direction_coefficient, span_coefficients

VARIANTS = ("authors", "subspace")
TRIGGERS = ("fixed", "calibrated")
GATES = ("fixed", "shuffled")


class RedRegState(NamedTuple):
  rpm: RPMState
  calibration: TriggerCalibration
  anchor: Any
  anchor_epoch: jax.Array
  count: jax.Array
  key: jax.Array
  diagnostics: dict[str, jax.Array]


def _diagnostics(M: int) -> dict[str, jax.Array]:
  scalars = ("r_threshold", "trigger", "similarity", "shuffled_similarity", "tau", "gate", "beta",
             "applied_strength", "probed")  # one buffer each: the state may be donated
  return {"dominant": -jnp.ones((), jnp.float32), "r": jnp.zeros((M,), jnp.float32),
          "S": jnp.ones((M,), jnp.float32), "red": jnp.ones((M,), jnp.float32),
          "confidence": jnp.zeros((M,), jnp.float32),
          **{k: jnp.zeros((), jnp.float32) for k in scalars}}


def _check_options(variant: str, trigger: str, gate: str, probe_every: int,
                   total_epochs: int) -> None:
  for name, value, valid in (("variant", variant, VARIANTS), ("trigger", trigger, TRIGGERS),
                             ("gate", gate, GATES)):
    if value not in valid:
      raise ValueError(f"redreg: unknown {name} {value!r}; valid: {list(valid)}")
  if probe_every < 0:
    raise ValueError(f"redreg: probe_every must be >= 0 (0 disables the probe), got "
                     f"{probe_every}")
  if total_epochs < 1:
    raise ValueError(f"redreg: total_epochs must be >= 1, got {total_epochs}")


def redreg(param_labels: Any, *, total_epochs: int, variant: str = "authors",
           trigger: str = "fixed", gate: str = "fixed",
           modalities: Sequence[str] | None = None, window: int = 10, gamma: float = 0.6,
           threshold: float = 0.15, momentum: float = 0.9, sigma: float = 0.03,
           beta_c: float = 0.9, beta_scale: Any = 1.0, tau_start: float = 0.2,
           tau_end: float = 0.5, gate_temperature: float | None = None,
           rpm_reset_each_epoch: bool = True, rpm_bias_correction: bool = False,
           trigger_z: float = 1.0, calibration_momentum: float = 0.99, eps: float = 1e-12,
           probe_every: int = 1, fused_loss: str = FUSED,
           unimodal_losses: Mapping[str, str] | None = None, projection_tol: float = 1e-4,
           seed: int = 0) -> optax.GradientTransformationExtraArgs:
  """RedReg as an optax transform; defaults are the authors' (main_RedReg.py line numbers).

  Args:
    param_labels: label tree of the params (or a function of the params returning one).
    total_epochs: length of training, for the gate threshold τ(epoch) (:103-104).
    variant: "authors" (per-tensor rank-1 projection against the total gradient, :307-326) or
      "subspace" (mmreg's: against the span of the other losses' gradients; reads `loss_grads`).
    trigger: "fixed" (r_dom > `threshold`, :228-232) or "calibrated" (mmreg's: r_dom > mean(r)
      + `trigger_z`·std(r), exponentially weighted with `calibration_momentum` over the previous
      scores of the run; only steps whose growth S is a real rate (from the (W+1)-th step after
      an RPM reset) count and can fire, and only once `window` of them have been seen).
    gate: "fixed" (batch cosine > τ, :241-247) or "shuffled" (mmreg's: (sim − sim_unpaired) /
      (1 − sim_unpaired) > τ, sim_unpaired from a random derangement of the batch).
    window, gamma, threshold, momentum, sigma: RPM window W = 10 (:97), γ = 0.6 (:98), trigger
      R = 0.15 (:99), EMA momentum 0.9 (:96), probe noise σ = 0.03 (:196-197).
    beta_c, beta_scale: β = beta_scale·exp(beta_c·tanh(p_dom − p_weak)), beta_c = 0.9 (:100,
      :229-234); `beta_scale` (mmreg's, 1 = the authors') is schedulable through
      `optax.inject_hyperparams`.
    tau_start, tau_end, gate_temperature: τ from 0.2 to 0.5 (:104); None = the authors' hard
      gate, else mmreg's smooth gate sigmoid((sim − τ)/temperature).
    rpm_reset_each_epoch, rpm_bias_correction: the authors reset the confidence history and
      the redundancy EMA at each epoch (:94-95, locals of `train_epoch`) and do not
      bias-correct the EMA; the opposites are mmreg's options.
    eps: the authors' ε = 1e-12 (:101, :307) in S, the redundancy ratio, red_norm and d_⊥.
    probe_every: run the noise probe (one extra no-gradient encoder pass per modality, two
      noisy copies) every this many steps (the authors: 1); skipped steps cost nothing
      (`lax.cond`) and keep the last normalised redundancy; 0 disables it (red_norm stays 1).
    fused_loss, unimodal_losses: loss names in `loss_grads` (subspace variant); unimodal losses
      default to the modality names, as `mmreg.classification_losses` names them.
    projection_tol: relative residual below which Gram–Schmidt treats a gradient as dependent.

  Extras used: `modality_logits`, `labels`, `features`, `epoch`, `encode_fn` and `inputs` (probe),
  `key` (optional), `loss_grads` (subspace variant).
  Diagnostics: `applied_strength` = β·gate·trigger (what reaches the update), its factors
  `beta`, `gate`, `trigger`, and `dominant`, `r`, `r_threshold`, `S`, `red`, `confidence`,
  `similarity`, `shuffled_similarity` (0 unless gate="shuffled"), `tau`, `probed`.
  """
  _check_options(variant, trigger, gate, probe_every, total_epochs)
  subspace = variant == "subspace"

  def init_fn(params):
    _, mods = resolve_labels(param_labels, params, modalities, "redreg")
    return RedRegState(rpm_init(len(mods), window), calibration_init(len(mods)),
                       jax.tree.map(jnp.copy, params), -jnp.ones((), jnp.int32),
                       jnp.zeros((), jnp.int32), jax.random.PRNGKey(seed),
                       _diagnostics(len(mods)))

  def update_fn(updates, state, params=None, **extra):
    labels, mods = resolve_labels(param_labels, updates, modalities, "redreg")
    M = len(mods)
    params = require_params(params, "redreg")
    epoch = jnp.asarray(require(extra.get("epoch"), "epoch", "redreg",
                                "anchors and the gate threshold are per epoch"), jnp.int32)
    unimodal = {m: (unimodal_losses or {}).get(m, m) for m in mods}
    loss_grads = extra.get("loss_grads")
    if subspace:
      check_loss_stack(loss_grads, [fused_loss, *unimodal.values()], "redreg")

    new_epoch = epoch != state.anchor_epoch
    # A select, not lax.cond: it writes in place of the (donated) anchor, never beside it.
    anchor = jax.tree.map(lambda p, a: jnp.where(new_epoch, p, a), params, state.anchor)
    rpm = state.rpm
    if rpm_reset_each_epoch:
      rpm = jax.tree.map(lambda f, s: jnp.where(new_epoch, f, s), rpm_init(M, window), rpm)

    confidence = modality_confidence(extra.get("modality_logits"), extra.get("labels"), mods,
                                     "redreg")
    rpm = push_confidence(rpm, confidence)
    key, next_key = jax.random.split(state.key)
    if extra.get("key") is not None:
      key = extra["key"]
    probe_key, shuffle_key = jax.random.split(key)
    probed = jnp.asarray(False)
    if probe_every > 0:
      encode_fn = require(extra.get("encode_fn"), "encode_fn", "redreg",
                          "the noise probe encodes noisy inputs; or set probe_every=0")
      inputs = require(extra.get("inputs"), "inputs", "redreg",
                       "the noise probe perturbs the inputs; or set probe_every=0")
      missing = [m for m in mods if m not in inputs]
      if missing:
        raise ValueError(f"redreg: `inputs` has no entry for {missing}; it holds {sorted(inputs)}")
      probe_keys = jax.random.split(probe_key, M)

      def probe(r: RPMState) -> RPMState:
        red = jnp.stack([
            noise_redundancy(lambda x, m=m: encode_fn(m, x), inputs[m], probe_keys[i], sigma,
                             eps)
            for i, m in enumerate(mods)])
        return push_redundancy(r, red, momentum, rpm_bias_correction, eps)

      probed = (state.count % probe_every) == 0
      rpm = jax.lax.cond(probed, probe, lambda r: r, rpm)
    signal = rpm_score(rpm, gamma, eps)

    dom = dominance(confidence)
    has_dom = dom.dominant >= 0
    dom_idx = jnp.maximum(dom.dominant, 0)
    calibration = state.calibration
    if trigger == "calibrated":
      ready = rpm.count > window  # before, S is the placeholder 1, not a growth rate
      r_threshold = jnp.where(ready, calibrated_threshold(calibration, trigger_z, window)[dom_idx],
                              jnp.inf)
      pushed = push_score(calibration, signal.score, calibration_momentum)
      calibration = jax.tree.map(lambda new, old: jnp.where(ready, new, old), pushed, calibration)
    else:
      r_threshold = jnp.asarray(threshold, jnp.float32)
    fired = has_dom & (signal.score[dom_idx] > r_threshold)

    similarity = cross_modal_similarity(extra.get("features"), mods, eps)
    baseline = jnp.zeros((), jnp.float32)
    gate_input = similarity
    if gate == "shuffled":
      baseline = shuffled_similarity(extra["features"], mods, shuffle_key, eps)
      gate_input = excess_similarity(similarity, baseline, eps)
    tau = gate_threshold(epoch, total_epochs, tau_start, tau_end)
    gate_value = coinformation_gate(gate_input, tau, gate_temperature)
    beta = jnp.where(has_dom, beta_scale * jnp.exp(beta_c * jnp.tanh(dom.gap)), 0.0)
    strength = beta * gate_value * fired.astype(jnp.float32)

    flat_g, flat_p, flat_a = leaves(updates), leaves(params), leaves(anchor)
    groups = {m: [j for j, lab in enumerate(labels) if lab == m] for m in mods}

    def d(j: int) -> jax.Array:  # θ − θ^anchor, formed where it is read, never stored
      return flat_p[j].astype(jnp.float32) - flat_a[j].astype(jnp.float32)

    # d_⊥ of leaf j is d_j − Σ_b coef_b·(direction_b·inv_b): per modality the directions are
    # static, the coefficients come from reductions under lax.switch (skipped when unused).
    if subspace:
      grad_leaves, row_masks = leaves(loss_grads.grads), loss_grads.row_masks()

      def directions(m):
        """Per vector of the other losses that reaches this encoder: its leaves (None where
        the stack marks the row as zero); all-zero vectors are left out, exactly."""
        out = []
        for n in [fused_loss, *(unimodal[o] for o in mods if o != m)]:
          i = loss_grads.index(n)
          v = [grad_leaves[j][i] if row_masks[j][i] else None for j in groups[m]]
          if any(x is not None for x in v):
            out.append(v)
        return out

      dirs = {m: directions(m) for m in mods}
      identity = {m: (jnp.zeros((len(dirs[m]),), jnp.float32),
                      jnp.ones((len(dirs[m]),), jnp.float32)) for m in mods}

      def coefficients(m):
        if not dirs[m]:
          return identity[m]
        return span_coefficients([d(j) for j in groups[m]], dirs[m], projection_tol)
    else:
      identity = {m: (jnp.zeros((len(groups[m]),), jnp.float32),
                      jnp.ones((len(groups[m]),), jnp.float32)) for m in mods}

      def coefficients(m):
        c, inv = zip(*(direction_coefficient(d(j), flat_g[j], eps) for j in groups[m]),
                     strict=True)
        return jnp.stack(c), jnp.stack(inv)

    # Branch M leaves the gradient untouched: no dominant modality or zero applied strength.
    which = jnp.where(has_dom & (strength != 0), dom_idx, M)
    coef = jax.lax.switch(which, [*(lambda m=m: {**identity, m: coefficients(m)} for m in mods),
                                  lambda: identity])
    out = list(flat_g)
    for i, m in enumerate(mods):
      k = jnp.where(which == i, strength, 0.0).astype(jnp.float32)
      c, inv = coef[m]
      for pos, j in enumerate(groups[m]):
        if subspace:
          terms = [(v[pos], c[b], inv[b]) for b, v in enumerate(dirs[m]) if v[pos] is not None]
        else:
          terms = [(flat_g[j], c[pos], inv[pos])]
        d_perp = d(j)
        for direction, cb, ib in terms:
          d_perp = d_perp - cb * (direction.astype(jnp.float32) * ib)
        g = flat_g[j]
        out[j] = jnp.where(k != 0, (g.astype(jnp.float32) + k * d_perp).astype(g.dtype), g)

    diagnostics = {"dominant": dom.dominant.astype(jnp.float32), "r": signal.score,
                   "r_threshold": r_threshold.astype(jnp.float32),
                   "trigger": fired.astype(jnp.float32), "S": signal.growth,
                   "red": signal.red_norm, "confidence": confidence, "similarity": similarity,
                   "shuffled_similarity": baseline, "tau": tau, "gate": gate_value,
                   "beta": jnp.asarray(beta, jnp.float32),
                   "applied_strength": jnp.asarray(strength, jnp.float32),
                   "probed": probed.astype(jnp.float32)}
    new_state = RedRegState(rpm, calibration, anchor, epoch, state.count + 1, next_key,
                            diagnostics)
    return unflatten_like(updates, out), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
