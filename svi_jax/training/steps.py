"""Pure, jitted, donated training steps for the three phases (MODEL.md §4).

`state` is a dict pytree: {"step", "rng", "params", "opt_state"} (+ "disc" in the GAN phase:
{"params", "stats", "opt_state"}). `step(state, batch) -> (state, metrics)`:
* the level is traced: level = S - (step mod S), the same on every device, so one compilation
  serves all levels (a message is logged each time a step function is traced);
* every random draw comes from fold_in(rng, step) and is drawn for the global batch, so 1 and
  N devices (and a resumed run) see the same noise;
* losses are means over the global batch, so the update does not depend on the device count.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import optax

from svi_jax.forward import draw_train_noise, train_forward
from svi_jax.metrics.pixelwise import psnr_from_mse
from svi_jax.nn import discriminator as gan_lib
from svi_jax.nn.model import ProgressiveSIC, init_params
from svi_jax.objective import aux_loss, level_weights, svi_loss_from_outputs, warming_loss
from svi_jax.tracing import count_trace
from svi_jax.training import optim

logger = logging.getLogger(__name__)
PHASES = ("warming", "main", "gan")


def step_trace_name(phase: str) -> str:
    """Name under which svi_jax.tracing counts the compilations of a phase's step."""
    return f"train_step/{phase}"


def level_at(step: jax.Array, num_slices: int) -> jax.Array:
    """Level schedule: step k trains level S - (k mod S) (16, 15, ..., 1, 16, ...)."""
    return (num_slices - jnp.mod(step, num_slices)).astype(jnp.int32)


def psnr(mse: jax.Array) -> jax.Array:
    """Training-metric PSNR (dB) of an MSE on [0, 1] images, floored at 100 dB: an exact
    reconstruction must not read as +inf, which the loop's NaN/Inf check takes for divergence."""
    return psnr_from_mse(jnp.maximum(mse, 1e-10))


def _no_balance(loss_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(loss_config.to_dict())
    cfg.balance_rate = False  # added below with a traced on/off switch
    return cfg


def _state_keys(rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(parameters, discriminator, training) keys of a fresh state, from the run's key."""
    return tuple(jax.random.split(rng, 3))


def initial_params(
    config: ml_collections.ConfigDict, model: ProgressiveSIC, rng: jax.Array
) -> dict:
    """The parameters `init_state(config, model, rng)` starts from; eager or traced, the same
    values (the training loop draws them eagerly: nothing per parameter to compile)."""
    params = init_params(model, _state_keys(rng)[0])
    bias = float(config.train.get("output_bias_init", -1.0))
    return with_output_bias(params, bias) if bias >= 0 else params


def init_state(config, model: ProgressiveSIC, rng: jax.Array, params=None) -> dict:
    """Fresh training state for `config.phase` (params from `params` when given, else
    `initial_params(config, model, rng)`)."""
    phase = config.phase
    _, disc_rng, train_rng = _state_keys(rng)
    if params is None:
        params = initial_params(config, model, rng)
    tx, _ = optim.make_optimizer(config, params, phase)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "rng": train_rng,
        "params": params,
        "opt_state": tx.init(params),
    }
    if phase == "gan":
        disc = gan_lib.build_discriminator(config)
        size = config.data.crop_size
        variables = disc.init(
            disc_rng,
            jnp.zeros((1, size, size, 3)),
            jnp.zeros((1, size // 16, size // 16, model.latent_channels)),
            jnp.int32(model.num_slices),
        )
        state["disc"] = {
            "params": variables["params"],
            "stats": variables["batch_stats"],
            "opt_state": optim.discriminator_optimizer(config).init(variables["params"]),
        }
    return state


def with_output_bias(params: dict, value: float) -> dict:
    """`params` with g_s's last conv bias set to `value` (the demo's init; official: PyTorch's
    default uniform init, which starts x_hat near 0 with about half its pixels clipped)."""
    outconv = params["gs"]["outconv"]
    gs = dict(params["gs"], outconv=dict(outconv, bias=jnp.full_like(outconv["bias"], value)))
    return dict(params, gs=gs)


def make_step_fn(config, model: ProgressiveSIC, lpips_params: dict):
    """Un-jitted `step(state, batch) -> (state, metrics)` for `config.phase`."""
    phase = config.phase
    if phase not in PHASES:
        raise ValueError(f"config.phase must be one of {PHASES}, got {phase!r}")
    loss_cfg = _no_balance(config.loss)
    balance = bool(config.loss.balance_rate)
    balance_steps = int(config.train.balance_rate_steps)
    num_samples = int(config.loss.num_samples)
    s = model.num_slices
    disc = gan_lib.build_discriminator(config) if phase == "gan" else None
    disc_tx = optim.discriminator_optimizer(config) if phase == "gan" else None

    def loss_from_outputs(out, x, level, step):
        loss, metrics = svi_loss_from_outputs(model, lpips_params, x, level, out, loss_cfg)
        if balance:
            on = step < balance_steps if balance_steps > 0 else jnp.bool_(True)
            extra = (
                config.loss.balance_std_weight * metrics["bpp_y_splits_std"]
                - config.loss.balance_chunk_weight * metrics["bpp_y_splits_chunk"]
            )
            loss = loss + jnp.where(on, extra, 0.0)
        metrics = dict(metrics, loss=loss)
        metrics["psnr_syntactic"] = psnr(metrics["mse_syntactic"])
        metrics["psnr_level"] = psnr(metrics["Emse_loss"])
        metrics["bpp"] = metrics["bpp_ys"] + metrics["bpp_z"]
        return loss, metrics

    def step_fn(state, batch):
        count_trace(step_trace_name(phase))
        logger.info("tracing the %s step for batch %s (compilation)", phase, batch.shape)
        step, params = state["step"], state["params"]
        level = level_at(step, s)
        key = jax.random.fold_in(state["rng"], step)
        tx, labels = optim.make_optimizer(config, params, phase)
        m = 0 if phase == "warming" else num_samples
        noise = draw_train_noise(model, key, batch.shape, m)
        new_state = dict(state)
        if phase == "warming":

            def loss_fn(p):
                loss, met = warming_loss(model, p, lpips_params, batch, noise.y, noise.z)
                met = dict(met, psnr_syntactic=psnr(met["mse_syntactic"]))
                met["bpp"] = met["bpp_y"] + met["bpp_z"]
                return loss, met

        elif phase == "main":

            def loss_fn(p):
                out = train_forward(model, p, batch, level, noise)
                return loss_from_outputs(out, batch, level, step)

        if phase == "gan":
            (loss, metrics), grads, d_state, d_metrics = _gan_update(
                config, model, disc, disc_tx, state, batch, level, noise, loss_from_outputs, step
            )
            new_state["disc"] = d_state
        else:
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        aux, aux_grads = jax.value_and_grad(lambda p: aux_loss(model, p))(params)
        grads = optim.combine_grads(labels, grads, aux_grads)
        updates, new_state["opt_state"] = tx.update(grads, state["opt_state"], params)
        new_state["params"] = optax.apply_updates(params, updates)
        new_state["step"] = step + 1
        metrics = dict(
            metrics, aux_loss=aux, level=level, grad_norm=optim.global_norm(grads, labels)
        )
        if phase == "gan":
            metrics.update(d_metrics)
        return new_state, metrics

    return step_fn


def _gan_update(config, model, disc, disc_tx, state, x, level, noise, loss_from_outputs, step):
    """One forward pass serves both players: the discriminator is updated first on the
    detached reconstructions, then the generator's gradient is pulled back through the same
    forward (jax.vjp) from the SVI loss plus the adversarial terms.

    Returns ((loss, metrics), generator grads, new discriminator state, discriminator metrics).
    """
    gan_cfg = config.gan
    b = x.shape[0]
    params, d = state["params"], state["disc"]
    out, pullback = jax.vjp(lambda p: train_forward(model, p, x, level, noise), params)
    y_hat = jax.lax.stop_gradient(out["latents"].y_hat)
    m = out["x_hat_samples"].shape[0] // b
    y_rep = jnp.tile(y_hat, (m, 1, 1, 1))
    cond = jnp.concatenate([y_hat, y_rep], axis=0)

    def d_apply(dp, stats, images, cond, update):
        variables = {"params": dp, "batch_stats": stats}
        if update:
            return disc.apply(variables, images, cond, level, True, mutable=["batch_stats"])
        return disc.apply(variables, images, cond, level, False), None

    fakes = jax.lax.stop_gradient(jnp.concatenate([out["x_hat_syn"], out["x_hat_samples"]], 0))

    def d_loss_fn(dp):
        # One D call on [x; x_syn; samples] so the power iteration runs once per D step.
        images = jnp.concatenate([x, fakes], axis=0)
        logits, new_vars = d_apply(dp, d["stats"], images, jnp.concatenate([y_hat, cond]), True)
        real, fake_syn, fake_smp = logits[:b], logits[b : 2 * b], logits[2 * b :]
        loss = (
            gan_lib.bce_with_logits(real, 1.0)
            + 0.5 * gan_lib.bce_with_logits(fake_syn, 0.0)
            + 0.5 * gan_lib.bce_with_logits(fake_smp, 0.0)
        )
        return loss, new_vars["batch_stats"]

    (d_loss, stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d["params"])
    d_updates, d_opt = disc_tx.update(d_grads, d["opt_state"], d["params"])
    d_params = optax.apply_updates(d["params"], d_updates)
    d_state = {"params": d_params, "stats": stats, "opt_state": d_opt}

    def g_loss_fn(o):
        loss, metrics = loss_from_outputs(o, x, level, step)
        images = jnp.concatenate([o["x_hat_syn"], o["x_hat_samples"]], axis=0)
        logits, _ = d_apply(d_params, stats, images, cond, False)
        g_syn = gan_lib.bce_with_logits(logits[:b], 1.0)
        g_smp = gan_lib.bce_with_logits(logits[b:], 1.0)
        _, gamma16, _ = level_weights(config.loss, model.num_slices, model.num_slices)
        _, gamma, _ = level_weights(config.loss, level, model.num_slices)
        adv = (
            config.loss.syntactic_weight * gamma16 * g_syn
            + config.loss.synonymous_weight * gamma * g_smp
        )
        loss = loss + gan_cfg.adversarial_weight * adv
        return loss, dict(metrics, loss=loss, g_syntactic=g_syn, g_samples=g_smp)

    (loss, metrics), out_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(out)
    (grads,) = pullback(out_grads)
    d_metrics = {"d_loss": d_loss, "d_grad_norm": optim.global_norm(d_grads)}
    return (loss, metrics), grads, d_state, d_metrics
