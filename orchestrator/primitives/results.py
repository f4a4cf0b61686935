"""What a command run inside a VM returned: by a provider's ``exec`` (the backend's own
channel) or through pyinfra's connector (``orch_worker.run``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExecResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def __bool__(self) -> bool:
        return self.ok
