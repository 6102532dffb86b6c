"""Named exceptions whose messages name what failed, the input, and the fix."""


class LensparkError(Exception):
    """Base class of every error lenspark raises on purpose."""


class DataSourceError(LensparkError):
    """A dataset could not be found, downloaded or verified."""


class InputFormatError(LensparkError):
    """An input file is missing, empty, or has the wrong header or format."""


class IncompleteTableError(LensparkError):
    """A table has no completion marker, so a writer has not finished it."""


class ConfigError(LensparkError):
    """A setting has a value that cannot be used."""


class DataQualityError(LensparkError):
    """Too many input rows were invalid to trust the run."""
