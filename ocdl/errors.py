"""The one exception type that the command line turns into a single error line."""


class OcdlError(ValueError):
    """Bad input or an impossible request; the message is one line meant for the user."""
