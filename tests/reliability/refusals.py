"""Shared pieces of the refusal tests: a refusal is one line holding the given words, and no work starts first."""

import pytest


def raises_one_line(call, *words, error=ValueError) -> str:
    """The message of the `error` that `call()` raises, checked to be one line holding every one of `words`."""
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and not [word for word in words if word not in message], message
    return message


def never(*args, **kwargs):
    """Patched over the first piece of work: a refusal must come before it."""
    raise AssertionError("work started before the refusal")
