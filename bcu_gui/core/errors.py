"""User-facing errors: each carries one sentence a person can act on, shown as a dialog or a CLI line."""

from __future__ import annotations


class BcuError(Exception):
    """Bad input or a condition the user can fix; ``str(error)`` is the whole message."""


class CheckpointError(BcuError):
    """A checkpoint file cannot be read or understood."""


class UntrustedCheckpointError(CheckpointError):
    """The file needs full unpickling, which can run code; the caller must trust it explicitly."""


class ArchitectureError(BcuError):
    """The weights match no known architecture, or not the one named."""


class DataError(BcuError):
    """An image folder is missing, empty or unreadable, or labels do not fit the model."""


class ConfigError(BcuError):
    """A setting is out of range or inconsistent."""
