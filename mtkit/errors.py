"""The exceptions mtkit raises for mistakes a user can make.

The library raises these with a message that says what is wrong, shows the value
and says what to do; the CLI prints the message as one line and exits 1. Anything
else that escapes is a bug and keeps its traceback.
"""


class MtkitError(Exception):
    """A problem the user can fix: bad input, a missing file, an option out of range."""


class DataError(MtkitError):
    """A corpus, dataset or text file that cannot be read or does not fit."""


class ConfigError(MtkitError):
    """An option or configuration value that is not valid."""


class CheckpointError(MtkitError):
    """A file that is not a usable mtkit checkpoint."""


class WriteError(MtkitError):
    """A file that could not be written: no space, a read-only disk, no permission."""


class ChecksumError(MtkitError):
    """A file whose contents differ from what mtkit wrote: its checksum does not match."""
