"""Errors that the CLI turns into a clear message and a non-zero exit code."""


class HpstudyError(Exception):
    """Base class: a user-facing problem with a message that says how to fix it."""

    exit_code = 1


class DataError(HpstudyError):
    """Dataset files missing, corrupt or not the canonical ones."""

    exit_code = 3


class StudyError(HpstudyError):
    """A study file that does not parse or validate."""

    exit_code = 2


class StoreError(HpstudyError):
    """A results store that cannot be read, or holds parts that are not this study's runs."""

    exit_code = 4


class EngineError(HpstudyError):
    """Training failed in a worker process, or could not be set up on one core."""

    exit_code = 5


class VerificationError(HpstudyError):
    """`hpstudy verify` found stored values that training again did not reproduce bit for bit."""

    exit_code = 6


class OutputError(HpstudyError):
    """A results or report folder that cannot be written (missing permission, a file in the way, disk full)."""

    exit_code = 7


class LockedError(HpstudyError):
    """Another process holds the study's store."""

    exit_code = 8


class TooBigError(HpstudyError):
    """A run too large to start without confirmation (--yes), or beyond what hpstudy can hold at all."""

    exit_code = 9


class Interrupted(HpstudyError):
    """Stopped by Ctrl-C (SIGINT); finished chunks are stored, the run can be resumed."""

    exit_code = 130
