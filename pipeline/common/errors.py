"""The one exception type the CLI turns into an actionable message and a non-zero exit."""


class PipelineError(Exception):
    """A problem the user can fix: bad input, a missing file, an unsupported graph."""
