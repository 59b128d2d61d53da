"""Errors a user can cause and fix. The CLI prints them as one line, without a traceback."""


class SlimgenError(Exception):
    """Base class of every error caused by user input (paths, files, configs, recipes)."""


class DataError(SlimgenError):
    """A data file or folder is missing, truncated or malformed."""


class ModelFolderError(SlimgenError):
    """A model folder or weights file is missing, corrupt or inconsistent with its config."""


class ConfigError(SlimgenError, ValueError):
    """A method config or recipe has an invalid value."""


class TrainingDiverged(SlimgenError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class OutputError(SlimgenError):
    """An output path cannot be written: it exists, is the wrong kind, is read-only or the disk is full."""


class UntrustedCodeError(ModelFolderError):
    """A folder names a user's ``module:Class`` that the user has not chosen to import."""
