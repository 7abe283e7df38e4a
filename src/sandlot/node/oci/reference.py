"""Image references: `[registry[:port]/]repository[:tag][@sha256:digest]`.

Parsed the way Docker does: the first component is a registry host when it has
a `.` or a `:` or is `localhost`; otherwise the reference means Docker Hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandlot import errors

__all__ = ["Reference", "looks_like_reference"]

DOCKER_HUB = "registry-1.docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$")


def looks_like_reference(name: str) -> bool:
    """A template name never has `/`, `:` or `@`; a reference to pull usually does."""
    return any(c in name for c in "/:@")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        def bad(why: str) -> errors.InvalidArgumentError:
            return errors.InvalidArgumentError(f"bad image reference {text!r}: {why}", field="image")

        rest = text.strip()
        if not rest or len(rest) > 512:
            raise bad("empty or longer than 512 characters")
        digest = None
        if "@" in rest:
            rest, digest = rest.rsplit("@", 1)
            if not _DIGEST.match(digest):
                raise bad("the digest must be sha256: and 64 hex digits")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            if not _HOST.match(first):
                raise bad(f"{first!r} is not a registry host[:port]")
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        tag = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
            if not _TAG.match(tag):
                raise bad(f"{tag!r} is not a valid tag")
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        for part in path.split("/"):
            if not _COMPONENT.match(part):
                raise bad(f"repository component {part!r} must be lowercase letters, digits and separators")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, path, tag, digest)

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
