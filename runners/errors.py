"""Errors of the runner layer, in a module with no imports of its own: every runner module
(``runners.options``, ``runners.prism``, ...) raises them without importing the others."""

from __future__ import annotations


class RunnerConfigError(ValueError):
    """The runner flags are incomplete or inconsistent; the message says which flag to add."""
