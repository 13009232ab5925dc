"""Every error endcloud raises on purpose, in one small tree.

    EndcloudError
     ├── ConfigError          a setting, flag or env variable is missing or wrong
     ├── DataError            an input file or record is malformed (names file and line)
     ├── PrivacyError         something personal would have left the shop
     ├── TeacherError         the cloud teacher failed
     │    ├── TeacherTimeout
     │    ├── TeacherStatusError   (carries the HTTP status)
     │    ├── TeacherParseError    (empty or malformed reply)
     │    └── BudgetExceeded       (the cost cap was reached; work so far is kept)
     ├── ModelError           a model/tokenizer/adapter directory cannot be used
     └── RegistryError        an unknown backend name (lists the valid ones)

The CLI turns any of these into one clear line and a non-zero exit code, never a
traceback. Messages say what was wrong (quoting the bad value) and what to do.
"""

from __future__ import annotations


class EndcloudError(Exception):
    """Base of all deliberate endcloud errors."""


class ConfigError(EndcloudError):
    """A setting is missing or invalid; the message names the flag or env variable."""


class DataError(EndcloudError):
    """An input file or record is malformed."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class PrivacyError(EndcloudError):
    """Personal data would have crossed the privacy gate."""


class TeacherError(EndcloudError):
    """The cloud teacher could not give a usable reply."""


class TeacherTimeout(TeacherError):
    """The teacher did not answer within the timeout (after all retries)."""


class TeacherStatusError(TeacherError):
    """The teacher answered with an HTTP error status (after all retries)."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


class TeacherParseError(TeacherError):
    """The teacher's reply was empty or not the expected JSON."""


class BudgetExceeded(TeacherError):
    """The cost cap was reached; everything answered so far is kept."""


class ModelError(EndcloudError):
    """A model, tokenizer or adapter directory cannot be loaded or used."""


class RegistryError(EndcloudError, KeyError):
    """An unknown name was asked of a registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
