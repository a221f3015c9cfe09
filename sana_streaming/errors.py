"""Errors of an edit that the CLI prints on one line (exit 1); shared by the pipeline and its stages."""


class EditError(ValueError):
    """An edit cannot run with these inputs or settings (the CLI prints it on one line, exit 1)."""


class SourceTooShortError(EditError):
    """The source has fewer frames than the edit asks for."""
