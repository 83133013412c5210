"""Errors a user can cause. Each carries a one-line message; the CLI prints it and exits with code 2."""


class HfdistillError(Exception):
    """Base class: a problem with the user's input (recipe, data, model path, Hub answer)."""

    def __init__(self, message: str):
        # One line, always: a multi-line message would hide the part that names the problem.
        super().__init__(" ".join(str(message).split()))


class RecipeError(HfdistillError):
    """The recipe is malformed; the message names the field path, e.g. `stages[1].temperature: must be > 0`."""


class DataError(HfdistillError):
    """GLUE data is missing or malformed; the message names the file and row."""


class ModelError(HfdistillError):
    """A model path or model folder cannot be used."""


class HubError(HfdistillError):
    """The Hub refused or failed a request; the message carries the server's reason, never a token."""
