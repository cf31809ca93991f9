"""Errors that zobench reports to the user as a message, not a traceback."""


class ConfigError(ValueError):
    """A bad configuration value, choice or data file, found before any model loads.

    The message names the offending key (``trainer.steps``) and what would be allowed.
    """


def bad_value(key: str, value, allowed: str) -> ConfigError:
    """A uniform message: ``trainer.steps=-1 is not allowed: expected an integer >= 0.``"""
    return ConfigError(f"{key}={value!r} is not allowed: expected {allowed}.")


def bad_choice(key: str, value, choices) -> ConfigError:
    choices = ", ".join(str(c) for c in choices)
    return ConfigError(f"{key}={value!r} is not allowed: choose one of {choices}.")
