"""How a command ended: one type for the node library and the SDK."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CommandResult"]


@dataclass
class CommandResult:
    """A non-zero `exit_code` is data; `check=True` turns it into CommandExitError."""

    stdout: str
    stderr: str
    exit_code: int | None  # None when a signal ended it
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    pids_limit_hit: bool = False
    pid: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def error(self) -> str | None:
        """A one-line reason when the command failed, else None."""
        if self.ok:
            return None
        if self.timed_out:
            return "timed out"
        if self.oom_killed:
            return "killed: out of memory"
        if self.pids_limit_hit:
            return "killed: its processes outgrew the pids limit"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exited with code {self.exit_code}"
