"""Exceptions raised on bad user input.

Every error names what is wrong and where: the file, the patient and the field, so a
researcher can fix the input without reading a traceback.
"""

from __future__ import annotations

from os import PathLike


class RadiopathInputError(ValueError):
    """Input that breaks the data contract of ``INTERFACE.md``.

    Parameters
    ----------
    message
        What is wrong, in words a user can act on.
    path, patient_id, field
        Where it is wrong; each one given is prefixed to the message.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike | None = None,
        patient_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.patient_id = patient_id
        self.field = field
        where = []
        if self.path is not None:
            where.append(f"file '{self.path}'")
        if patient_id is not None:
            where.append(f"patient '{patient_id}'")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.reason = message
