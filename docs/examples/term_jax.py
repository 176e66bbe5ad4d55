"""A VAE in plain JAX on scikit-learn's digits whose KL is held under a scheduled ceiling.

``penalty, term_state = term.update(term_state, kl, main=recon)`` inside one
``jax.jit`` training step, and ``term.epoch_end(term_state)`` on the host
once per epoch. The model is two small MLPs written with ``jax.numpy`` and
trained with optax's Adam. The reconstruction is a per-pixel mean squared
error: the term weighs the KL relative to it, so any other scale gives the
same run. The term discovers the KL's natural ceiling in epoch 1 (weighing
the KL by 0), holds it in epoch 2 and squeezes it geometrically to a quarter
of what it found; at most 5% of each epoch's steps may see the KL over the
ceiling in force.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from constraint_sched import Phase, Relative
from constraint_sched.adapters.jax import JaxConstraintTerm, JaxTermState

EPOCHS, BATCH, LATENT, HIDDEN = 9, 32, 16, 64

Params = dict[str, list[tuple[jax.Array, jax.Array]]]


def mlp_init(key: jax.Array, sizes: list[int]) -> list[tuple[jax.Array, jax.Array]]:
    """Weights and biases of an MLP with these layer sizes."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (m, n)) / jnp.sqrt(m), jnp.zeros(n))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(layers: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    """The MLP's output: ReLU between the layers, none after the last."""
    for w, b in layers[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = layers[-1]
    return x @ w + b


def vae(params: Params, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The batch's per-pixel mean squared error and each image's KL, shape (batch,)."""
    mu, logvar = jnp.split(mlp(params["encoder"], x), 2, axis=-1)
    z = mu + jax.random.normal(key, mu.shape) * jnp.exp(0.5 * logvar)
    recon = jnp.mean((mlp(params["decoder"], z) - x) ** 2)
    kl = 0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)  # nats per image
    return recon, kl


def main(epochs: int = EPOCHS, squeeze_epochs: int = 3) -> JaxConstraintTerm:
    """Train, squeezing over ``squeeze_epochs``; the last of ``epochs`` must run at the target.

    (Epoch 1 discovers, epoch 2 holds, the squeeze ends at epoch ``2 + squeeze_epochs``.)
    """
    images = load_digits().data / 16.0  # 1797 images, 8x8, in [0, 1]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train = jnp.asarray(images[order[:1500]], dtype=jnp.float32)
    held_out = jnp.asarray(images[order[1500:]], dtype=jnp.float32)
    pixels = train.shape[1]

    key, enc, dec = jax.random.split(jax.random.key(0), 3)
    params = {
        "encoder": mlp_init(enc, [pixels, HIDDEN, 2 * LATENT]),
        "decoder": mlp_init(dec, [LATENT, HIDDEN, pixels]),
    }
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)
    term = JaxConstraintTerm("kl", target=Relative(0.25), squeeze_epochs=squeeze_epochs, echo=print)
    term_state = term.init()

    @jax.jit
    def step(
        params: Params,
        opt_state: optax.OptState,
        term_state: JaxTermState,
        x: jax.Array,
        key: jax.Array,
    ) -> tuple[Params, optax.OptState, JaxTermState]:
        def loss(params: Params) -> tuple[jax.Array, JaxTermState]:
            recon, kl = vae(params, x, key)
            penalty, new_term_state = term.update(term_state, kl, main=recon)  # the whole use
            return recon + penalty, new_term_state

        grads, term_state = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, term_state

    steps = len(train) // BATCH
    for _epoch in range(epochs):
        batches = rng.permutation(len(train))[: steps * BATCH].reshape(steps, BATCH)
        for batch in batches:
            key, noise = jax.random.split(key)
            params, opt_state, term_state = step(params, opt_state, term_state, train[batch], noise)
        term_state, _events = term.epoch_end(term_state)  # on the host: the bound moves

    # The ceiling was found from the data and walked to a quarter of it.
    found = term.scheduler.discovered
    assert found is not None
    assert term.phase is Phase.CONVERGED
    assert term.bound == 0.25 * found
    # In the last epoch, at the target, at most 5% of the steps saw the KL over the ceiling,
    # and the KL's mean sat under it by the margin the chance constraint needs.
    last, tally = term.last_epoch, term.last_tally
    assert last is not None
    assert tally is not None
    assert last.bound == term.bound
    assert last.violation_rate <= 0.05
    assert 0.6 * term.bound < tally.mean < term.bound
    # The model still reconstructs held-out digits better than their mean image does.
    mu, _ = jnp.split(mlp(params["encoder"], held_out), 2, axis=-1)
    error = float(jnp.mean((mlp(params["decoder"], mu) - held_out) ** 2))
    baseline = float(jnp.mean((train.mean(axis=0) - held_out) ** 2))
    print(f"held-out reconstruction {error:.4f} (the mean image: {baseline:.4f})")
    assert error < baseline
    return term


if __name__ == "__main__":
    main()
