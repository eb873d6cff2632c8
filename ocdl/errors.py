"""The one exception type that the command line turns into a single error line."""


class OcdlError(ValueError):
    """Bad input or an impossible request; the message is one line meant for the user."""


def read_bytes(path, where: str) -> bytes:
    """The bytes of a user's file; a missing, unreadable file or a folder raises OcdlError with one
    line starting with ``where`` (e.g. "tableau file 'x.toml'")."""
    from pathlib import Path

    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise OcdlError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise OcdlError(f"{where} is a directory") from None
    except OSError as e:
        raise OcdlError(f"{where}: cannot read: {e.strerror or e}") from None


def read_text(path, where: str) -> str:
    """The UTF-8 text of a user's file (:func:`read_bytes`); a binary file raises OcdlError too."""
    raw = read_bytes(path, where)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OcdlError(f"{where}: not a text file (UTF-8), byte {e.start}: {e.reason}") from None
