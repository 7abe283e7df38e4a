"""Sandlot's exceptions: one tree for the node, the server and the SDK.

    SandlotError
    ├── NotFoundError
    │   ├── SandboxNotFoundError
    │   ├── ImageNotFoundError
    │   ├── ProcessNotFoundError
    │   ├── CheckpointNotFoundError
    │   ├── VolumeNotFoundError
    │   └── SandboxFileNotFoundError   (also FileNotFoundError)
    ├── InvalidArgumentError           (also ValueError)
    │   ├── CommandNotFoundError
    │   ├── DockerfileError            (a Dockerfile that does not parse; names its line)
    │   ├── UserNotFoundError
    │   ├── IsADirectoryError_         (also IsADirectoryError)
    │   ├── NotADirectoryError_        (also NotADirectoryError)
    │   └── DirectoryNotEmptyError
    ├── ConflictError
    │   └── FileExistsError_           (also FileExistsError)
    ├── SandboxStateError              (the sandbox is dead or in the wrong state)
    │   └── AgentUnresponsiveError     (its agent does not answer: killed, stopped or wedged)
    ├── PermissionDeniedError          (also PermissionError)
    │   ├── AuthenticationError        (no API key, or not a valid one)
    │   └── RegistryAuthError          (a registry refused the credentials, or wants some)
    ├── QuotaError
    │   ├── NoSpaceError               (the sandbox's disk is full)
    │   └── LimitReachedError          (pids limit, ...)
    ├── TimeoutError_                  (also TimeoutError)
    ├── CommandExitError               (check=True and a non-zero exit)
    ├── BuildError                     (a Dockerfile step failed: its output and exit code)
    ├── RuntimeUnavailableError        (runsc / crun missing or broken on this host)
    ├── DatabaseUnavailableError       (the server's database does not answer; retry shortly)
    ├── NodeUnreachableError           (a fleet: the node holding the sandbox stopped heartbeating)
    ├── RegistryError                  (an image registry failed us)
    │   ├── RegistryUnreachableError   (no answer, TLS to a plain-HTTP registry, ...)
    │   └── ImageCorruptError          (a blob or manifest does not match its digest)
    ├── PortNotListeningError          (an exposed port that nothing in the sandbox listens on)
    ├── ServerBusyError                (the node's queue of starts is full: retry after `retry_after` s)
    └── InternalError

Error codes on the wire (agent END frames, API error bodies) map to these
classes in exactly one table, `ERROR_CODES`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERROR_CODES",
    "AgentUnresponsiveError",
    "AuthenticationError",
    "BuildError",
    "CheckpointNotFoundError",
    "CommandExitError",
    "CommandNotFoundError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DirectoryNotEmptyError",
    "DockerfileError",
    "FileExistsError_",
    "ImageCorruptError",
    "ImageNotFoundError",
    "InternalError",
    "InvalidArgumentError",
    "IsADirectoryError_",
    "LimitReachedError",
    "NoSpaceError",
    "NodeUnreachableError",
    "NotADirectoryError_",
    "NotFoundError",
    "PermissionDeniedError",
    "PortNotListeningError",
    "ProcessNotFoundError",
    "QuotaError",
    "RegistryAuthError",
    "RegistryError",
    "RegistryUnreachableError",
    "RuntimeUnavailableError",
    "SandboxFileNotFoundError",
    "SandboxNotFoundError",
    "SandboxStateError",
    "SandlotError",
    "ServerBusyError",
    "TimeoutError_",
    "UserNotFoundError",
    "VolumeNotFoundError",
    "code_of",
    "error_from_code",
]


class SandlotError(Exception):
    """Root of every Sandlot error. `code` is the wire code, `field` the bad input."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.path = path

    def __str__(self) -> str:
        return self.message


class NotFoundError(SandlotError):
    code = "not_found"


class SandboxNotFoundError(NotFoundError):
    code = "sandbox_not_found"


class ImageNotFoundError(NotFoundError):
    code = "image_not_found"


class ProcessNotFoundError(NotFoundError):
    code = "process_not_found"


class CheckpointNotFoundError(NotFoundError):
    code = "checkpoint_not_found"


class VolumeNotFoundError(NotFoundError):
    code = "volume_not_found"


class SandboxFileNotFoundError(NotFoundError, FileNotFoundError):
    code = "file_not_found"


class InvalidArgumentError(SandlotError, ValueError):
    code = "invalid_argument"


class CommandNotFoundError(InvalidArgumentError):
    code = "command_not_found"


class DockerfileError(InvalidArgumentError):
    """A Dockerfile that does not parse (or asks for what builds here cannot do); `line` is where."""

    code = "dockerfile_error"

    def __init__(self, message: str, *, field: str | None = None, path: str | None = None, line: int = 0) -> None:
        super().__init__(message, field=field, path=path)
        self.line = line


class UserNotFoundError(InvalidArgumentError):
    code = "user_not_found"


class IsADirectoryError_(InvalidArgumentError, IsADirectoryError):
    code = "is_a_directory"


class NotADirectoryError_(InvalidArgumentError, NotADirectoryError):
    code = "not_a_directory"


class DirectoryNotEmptyError(InvalidArgumentError, OSError):
    code = "not_empty"


class ConflictError(SandlotError):
    code = "conflict"


class FileExistsError_(ConflictError, FileExistsError):
    code = "exists"


class SandboxStateError(SandlotError):
    code = "wrong_state"


class AgentUnresponsiveError(SandboxStateError):
    """The agent inside the sandbox did not answer in time (it was killed, stopped or is wedged)."""

    code = "agent_unresponsive"


class PermissionDeniedError(SandlotError, PermissionError):
    code = "permission_denied"


class AuthenticationError(PermissionDeniedError):
    code = "unauthenticated"


class RegistryAuthError(PermissionDeniedError):
    code = "registry_unauthorized"


class QuotaError(SandlotError):
    code = "quota"


class NoSpaceError(QuotaError, OSError):
    code = "no_space"


class LimitReachedError(QuotaError):
    code = "limit_reached"


class TimeoutError_(SandlotError, TimeoutError):
    """Something took longer than allowed; a command's `result` holds its output so far."""

    code = "timeout"

    def __init__(self, message: str, *, field: str | None = None, path: str | None = None, result: Any = None) -> None:
        super().__init__(message, field=field, path=path)
        self.result = result


class CommandExitError(SandlotError):
    """A command run with check=True exited non-zero; carries its result."""

    code = "command_exit"

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result

    @property
    def exit_code(self) -> int | None:
        return getattr(self.result, "exit_code", None)


class BuildError(SandlotError):
    """A build step failed: the message holds the step, its exit code and the end of its output."""

    code = "build_failed"

    def __init__(self, message: str, *, exit_code: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.output = output


class RuntimeUnavailableError(SandlotError):
    code = "runtime_unavailable"


class NodeUnreachableError(SandlotError):
    """The node that holds the sandbox stopped answering (a fleet: its heartbeats stopped)."""

    code = "node_unreachable"


class DatabaseUnavailableError(SandlotError):
    """The server's database (PostgreSQL, SQLite) did not answer; the server reconnects by itself."""

    code = "database_unavailable"


class RegistryError(SandlotError):
    code = "registry_error"


class RegistryUnreachableError(RegistryError):
    code = "registry_unreachable"


class ImageCorruptError(RegistryError):
    code = "image_corrupt"


class PortNotListeningError(SandlotError):
    """A request for a sandbox's port that no process in the sandbox accepts on."""

    code = "port_not_listening"


class ServerBusyError(SandlotError):
    """Nothing was done: the server's queue of sandbox starts is full. Retry after `retry_after` seconds."""

    code = "server_busy"

    def __init__(
        self, message: str, *, field: str | None = None, path: str | None = None, retry_after: int = 1
    ) -> None:
        super().__init__(message, field=field, path=path)
        self.retry_after = retry_after


class InternalError(SandlotError):
    code = "internal"


#: wire code -> exception class; the only place codes are mapped.
ERROR_CODES: dict[str, type[SandlotError]] = {
    cls.code: cls
    for cls in (
        NotFoundError,
        SandboxNotFoundError,
        ImageNotFoundError,
        ProcessNotFoundError,
        CheckpointNotFoundError,
        VolumeNotFoundError,
        SandboxFileNotFoundError,
        InvalidArgumentError,
        CommandNotFoundError,
        DockerfileError,
        UserNotFoundError,
        IsADirectoryError_,
        NotADirectoryError_,
        DirectoryNotEmptyError,
        ConflictError,
        FileExistsError_,
        SandboxStateError,
        AgentUnresponsiveError,
        PermissionDeniedError,
        AuthenticationError,
        RegistryAuthError,
        QuotaError,
        NoSpaceError,
        LimitReachedError,
        TimeoutError_,
        CommandExitError,
        BuildError,
        RuntimeUnavailableError,
        NodeUnreachableError,
        DatabaseUnavailableError,
        RegistryError,
        RegistryUnreachableError,
        ImageCorruptError,
        PortNotListeningError,
        ServerBusyError,
        InternalError,
    )
}
# The agent reports a missing path as plain "not_found": inside a sandbox that is a file.
_AGENT_ALIASES = {"not_found": SandboxFileNotFoundError, "invalid_argument": InvalidArgumentError}


def error_from_code(code: str, message: str, *, path: str | None = None, agent: bool = False) -> SandlotError:
    """Build the exception for a wire error code (unknown codes become InternalError)."""
    cls = (_AGENT_ALIASES.get(code) if agent else None) or ERROR_CODES.get(code, InternalError)
    if cls in (CommandExitError, BuildError):
        return cls(message)
    return cls(message, path=path)


def code_of(exc: BaseException) -> str:
    return exc.code if isinstance(exc, SandlotError) else InternalError.code
