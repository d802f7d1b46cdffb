"""How the stack talks to its user: progress on stderr, and StackError for what the user must fix."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)


class StackError(RuntimeError):
    """A failure the user can act on; the message says what to do or where the log is."""
