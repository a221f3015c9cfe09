"""Errors of an edit that the CLI prints on one line (exit 1); shared by the pipeline and its stages."""


class EditError(ValueError):
    """An edit cannot run with these inputs or settings (the CLI prints it on one line, exit 1)."""


class SourceTooShortError(EditError):
    """The source has fewer frames than the edit asks for."""


class OptionError(EditError):
    """One `EditOptions` field has a value the mode cannot run; `option` names it (the CLI maps it to
    its flag)."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option} {problem}")
        self.option, self.problem = option, problem
