"""The one error kind of the analysis layer: a table or argument that cannot be analysed."""
from __future__ import annotations

from mvlab.errors import UserError


class AnalysisError(UserError, ValueError):
    """A study, column or argument the analysis cannot use; the message says which and why."""
