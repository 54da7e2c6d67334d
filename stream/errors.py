"""The project's exceptions: one root, a subclass per domain."""

from __future__ import annotations


class CrmKpiError(Exception):
    """Root of every error this project raises on purpose."""


class InvalidEventError(CrmKpiError):
    """A record is not a valid CRM event; `reason` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SettingsError(CrmKpiError):
    """A setting has a value the project cannot work with."""


class StackError(CrmKpiError):
    """The local stack could not be installed, started or stopped."""


class CheckpointError(CrmKpiError):
    """A stored checkpoint of the KPI state cannot be read back."""


class CatalogueError(CrmKpiError):
    """A KPI id, window or dimension is not in the catalogue."""


class TopicError(CrmKpiError):
    """A Kafka topic the project needs cannot be checked or created."""
