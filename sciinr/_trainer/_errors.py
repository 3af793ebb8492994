"""The error `fit` raises when training diverges."""


class NonFiniteLossError(FloatingPointError):
    """Raised by [`sciinr.fit`][] when the loss (or one of its terms) is NaN or inf.

    Attributes `step` (the 1-based update whose loss was non-finite) and `term` (the
    name of the first non-finite term, or `"loss"`).
    """

    def __init__(self, message: str, *, step: int, term: str):
        super().__init__(message)
        self.step = step
        self.term = term


def non_finite(
    step: int, term: str, what: str, detail: str, kept: str = ""
) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"Non-finite {what} at step {step}: {detail}.{kept} Lower the learning "
        "rate, check the data, or clip gradients (optax.clip_by_global_norm).",
        step=step,
        term=term,
    )
