"""Errors meant for people.

Every error a user can cause (a missing file, bad recipe, corrupt .nsk, unsupported layer) is a
`NetshrinkError` subclass whose message names the file, layer or field and says what to do.
The CLI prints such an error as one line and exits with status 2; anything else is a bug.
"""


class NetshrinkError(Exception):
    """Base class of every user-facing error.

    The message is kept to one line: text quoted from elsewhere (a torch error with its C++ stack,
    an OS message) keeps its first line only, so the CLI's one-line promise holds by construction.
    """

    def __init__(self, message: str = "") -> None:
        lines = str(message).strip().splitlines()
        super().__init__(lines[0] + (" [...]" if len(lines) > 1 else "") if lines else type(self).__name__)


class FormatError(NetshrinkError):
    """A .nsk file is not valid: wrong magic, unsupported version, truncated, corrupt."""


class NotNetshrinkFile(FormatError):
    """The file does not start with the netshrink magic bytes."""


class UnsupportedVersion(FormatError):
    """The file was written by a newer (or unknown) format version."""


class TruncatedFile(FormatError):
    """The file ends before the lengths in its header say it should."""


class ChecksumMismatch(FormatError):
    """A checksum in the file does not match its bytes: the file is corrupt."""


class MalformedHeader(FormatError):
    """The header is not valid JSON of the expected shape, or holds out-of-range values."""


class RecipeError(NetshrinkError):
    """A recipe is invalid; the message names the bad field."""


class CodecError(NetshrinkError):
    """A codec cannot encode this tensor with these settings (e.g. impossible bit width)."""


class DataError(NetshrinkError):
    """A data set is missing or malformed; the message says where to put it."""


#: How to give a flow its training data, for the messages of steps that need it.
DATA_HINT = "(CLI: --dataset; API: data=)"


class ModelError(NetshrinkError):
    """A model name, checkpoint or layer is unknown or unsupported."""


class TooLarge(FormatError):
    """A file declares more decoded data than the reader's memory limit allows."""
