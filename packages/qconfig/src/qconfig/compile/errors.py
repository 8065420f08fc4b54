"""The compiler's error: the config cannot be applied to the model the manifest describes."""

from qconfig.errors import ConfigError

__all__ = ["CompileError"]


class CompileError(ConfigError):
    """The config cannot be applied to this model; nothing would have been changed."""
