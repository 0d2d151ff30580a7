"""The root of every error eebench raises on purpose.

A user's mistake (a wrong path, a NaN in a cache, an unknown option) and a
bug in eebench need different treatment: the first deserves one line that
says what was wrong and how to fix it, the second a traceback that a
maintainer can act on. Every deliberate error derives from ``EebenchError``,
so the command line can tell the two apart without guessing from built-in
exception types. The subclasses keep their built-in bases (``ValueError``,
``KeyError``, ...) so that code catching those keeps working.
"""

from __future__ import annotations


class EebenchError(Exception):
    """An error eebench raised deliberately; its message is meant for the user."""

    def __str__(self) -> str:
        # the message itself, also for subclasses of KeyError (which would quote it)
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class DataError(EebenchError, ValueError):
    """Values that cannot be what they claim: NaN logits, probabilities that do not sum to
    one, costs that are negative or decrease along the exits, empty or non-finite budgets."""


class OutputPathError(EebenchError, ValueError):
    """An output location that cannot be written as asked (a file where a folder is needed,
    a path outside its root, a read-only folder)."""


class InputError(EebenchError, ValueError):
    """A value given to eebench (an option, a file's content, an argument) that it cannot use;
    the message says which value and what would work."""


class InputTypeError(EebenchError, TypeError):
    """An argument of the wrong kind (a number where a name is needed, an object that is not
    a policy, ...)."""


class MissingKeyError(EebenchError, KeyError):
    """A file or table that lacks an entry it must hold."""


class UnknownNameError(EebenchError, KeyError, ValueError):
    """A name that no registry holds (a model, data set, score, solver, ...); the message lists
    the close matches and where to see every registered name."""
