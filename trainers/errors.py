"""Exceptions the trainer raises for expected failures (the CLI prints each as one line, exit status 2)."""
from __future__ import annotations


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient or parameter.

    Raised before anything non-finite is written: the run directory keeps its
    last good checkpoint, so the run can be resumed with different settings in
    a new directory or from that checkpoint.  The message is one line naming
    the epoch, what went non-finite and the likely fix.
    """
