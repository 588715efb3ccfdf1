"""Errors a user can cause and fix; the CLI prints their message without a traceback."""


class FedclError(Exception):
    """Base of user-fixable errors: the message names the problem and the fix."""


class ConfigError(FedclError, ValueError):
    """A configuration value that cannot work."""
