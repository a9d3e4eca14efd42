"""User-facing errors. The CLI maps each class to an exit code and a next step; tracebacks only with VOXRAY_DEBUG=1."""

from __future__ import annotations


class VoxrayError(Exception):
    """A problem the user can fix; printed without a traceback."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class SpecError(VoxrayError):
    """The job spec is invalid: one line per problem, each naming the YAML path. Nothing has started."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str], *, hint: str | None = None) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" if source else f"  {p}" for p in problems)
        super().__init__(f"invalid job spec ({len(problems)} problem{'s' * (len(problems) != 1)}):\n{lines}",
                         hint=hint or "fix the fields above, then run `voxray validate` again")


class StageUnavailable(VoxrayError):
    """A job kind whose stage package is not installed or not implemented."""

    exit_code = 3


class DataError(VoxrayError):
    """A dataset or store problem (wrong root, unreadable store, failed cases)."""

    exit_code = 4


class JobFailed(VoxrayError):
    """A stage ran but did not succeed (e.g. some cases failed, NaN loss)."""

    exit_code = 5
