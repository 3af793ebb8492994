"""The compiled pieces of the trainer.

Everything on the hot path is inside `run_chunk`: sampling, the problem's state
update, the loss, its gradient and the optimizer update for `length` steps, as one
`lax.scan`. The host only sees the per-step outputs of a whole chunk.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import optax
from jaxtyping import Array, PyTree


def injected_hyperparams(opt_state: PyTree) -> dict[str, Array]:
    """Scalar hyperparameters of `optax.inject_hyperparams` states in `opt_state`."""
    found: dict[str, Array] = {}
    is_inject = lambda x: isinstance(
        x, optax.InjectHyperparamsState | optax.InjectStatefulHyperparamsState
    )
    for node in jtu.tree_leaves(opt_state, is_leaf=is_inject):
        if is_inject(node):
            for name, value in node.hyperparams.items():
                if eqx.is_array(value) and jnp.ndim(value) == 0:
                    found.setdefault(name, value)
    return found


def state_scalars(state: PyTree) -> dict[str, Array]:
    """The scalar leaves of a problem state, named by their key paths joined by `_`
    (`{"weight": {"ic": w}}` gives `weight_ic`)."""
    return {
        jtu.keystr(path, simple=True, separator="_"): leaf
        for path, leaf in jtu.tree_leaves_with_path(state)
        if eqx.is_array(leaf) and leaf.ndim == 0
    }


def sample(problem, key, step, data_sharding):
    """The batch of update `step + 1`: drawn on device, sharded on a mesh."""
    batch = problem.sample(jr.fold_in(key, step))
    if data_sharding is not None:
        batch = jtu.tree_map(
            lambda x: jax.lax.with_sharding_constraint(x, data_sharding), batch
        )
    return batch


def loss(problem, field, batch, state):
    """`problem.loss`, with the problem's state when it has one."""
    if state is None:
        return problem.loss(field, batch)
    return problem.loss(field, batch, state)


def prepare(problem, field, batch, state, step):
    """The state that update `step + 1` computes its loss with."""
    if state is None:
        return None
    return problem.update_state(field, batch, state, step)


@eqx.filter_jit(donate="all-except-first")
def run_chunk(constants, carry, start, *, length: int):
    """`length` training steps from step `start`, as one `lax.scan`.

    `carry` is `(params, opt_state, problem_state)`; returns the new carry and the
    per-step `(loss, terms, hyperparameters, state scalars, finite)`.
    """
    problem, static, optimizer, key, data_sharding = constants
    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def loss_fn(params, batch, state):
        return loss(problem, eqx.combine(params, static), batch, state)

    def body(carry, i):
        params, opt_state, state = carry
        step = start + i
        batch = sample(problem, key, step, data_sharding)
        state = prepare(problem, eqx.combine(params, static), batch, state, step)
        (value, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch, state
        )
        # Third-party optimizers (optax's Adam bias correction: float ** int32 count)
        # are not written for `jax_numpy_dtype_promotion="strict"`; shield them so
        # that users (and our tests) can run our own code under strict promotion.
        with jax.numpy_dtype_promotion("standard"):
            if extra_args:
                # What line searches (`optax.lbfgs`) need; transforms that do not
                # use these arguments ignore them.
                updates, opt_state = optimizer.update(
                    grads,
                    opt_state,
                    params,
                    value=value,
                    grad=grads,
                    value_fn=lambda p: loss_fn(p, batch, state)[0],
                )
            else:
                updates, opt_state = optimizer.update(grads, opt_state, params)
        params = eqx.apply_updates(params, updates)
        # After the update, injected hyperparameters are the ones it used.
        hyper = injected_hyperparams(opt_state)
        finite = jtu.tree_reduce(
            jnp.logical_and,
            jtu.tree_map(lambda x: jnp.all(jnp.isfinite(x)), params),
            jnp.array(True),
        )
        outputs = (value, terms, hyper, state_scalars(state), finite)
        return (params, opt_state, state), outputs

    return jax.lax.scan(body, carry, jnp.arange(length))


@eqx.filter_jit
def next_loss(problem, field, state, key, step, data_sharding):
    """The loss terms that update `step + 1` will compute (the checkpoint guard)."""
    batch = sample(problem, key, step, data_sharding)
    state = prepare(problem, field, batch, state, step)
    value, terms = loss(problem, field, batch, state)
    return {"loss": value, **terms}


@eqx.filter_jit
def evaluate(problem, field):
    return problem.evaluate(field)


@eqx.filter_jit
def predict(problem, field):
    return problem.predict(field)
