"""One exception tree for livemod. Messages are written for operators."""

from __future__ import annotations


class LivemodError(Exception):
    """Root of every error livemod raises on purpose."""

    retryable: bool = False


class ConfigError(LivemodError):
    """The configuration or the policy file is invalid. Raised at start-up."""


class ModelError(LivemodError):
    """A model file is missing, corrupt, or does not match its manifest."""


class IngestError(LivemodError):
    """A source could not be opened or broke while it was read."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class InputLost(IngestError):
    """A network feed broke or went silent after it had delivered frames: its server
    or publisher died, or its connection was cut. Unlike a clean end of stream."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class StoreError(LivemodError):
    """The SQLite store or the evidence folder could not be used."""


class RequestError(LivemodError):
    """A client request is invalid; carries the HTTP status to answer."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
