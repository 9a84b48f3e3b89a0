"""Errors a person can act on. The CLI prints their message on one line and exits with status 2."""


class VovError(Exception):
    """Base of every error vov raises on purpose."""


class UsageError(VovError):
    """Bad arguments or input: missing file, unknown option value, unsupported image."""


class MediaError(UsageError):
    """The input is not an image vov can read, or is outside the stated limits."""


class BitstreamError(VovError):
    """A .vov file is truncated, corrupted, hostile, or of an unsupported version."""


class BackboneMismatch(VovError):
    """A file was made with other backbone weights than the ones available here."""
