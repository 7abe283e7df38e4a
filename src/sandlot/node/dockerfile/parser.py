"""Parse a Dockerfile into instructions, with the line each one starts on.

Supported: FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, EXPOSE, ENTRYPOINT,
CMD, LABEL (one build stage). Line continuations (`\\`), comments, exec
(JSON) and shell forms, and `$VAR` / `${VAR}` / `${VAR:-default}` /
`${VAR:+alt}` substitution in the instructions Docker substitutes in. Anything
else is a `DockerfileError` naming the line.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from sandlot import errors

__all__ = ["Instruction", "parse", "substitute"]

KNOWN = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL"}
UNSUPPORTED = {"ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "VOLUME", "MAINTAINER"}
SUBSTITUTED = {"FROM", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "EXPOSE", "LABEL"}
_VAR = re.compile(r"\$(?:\{(\w+)(?::([-+])([^}]*))?\}|(\w+))")


@dataclass(frozen=True)
class Instruction:
    cmd: str  # upper case
    args: str  # the text after the instruction, continuations joined
    line: int  # 1-based line it starts on
    flags: tuple[tuple[str, str], ...] = ()  # --name=value options (COPY --chown=...)

    def fail(self, why: str) -> errors.DockerfileError:
        return errors.DockerfileError(f"Dockerfile line {self.line}: {self.cmd}: {why}", line=self.line)

    def exec_form(self) -> list[str] | None:
        """The JSON array form (`["a", "b"]`), or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None  # Docker runs a malformed array as a shell command
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail("the JSON form must be an array of strings")
        return value

    def words(self) -> list[str]:
        try:
            return shlex.split(self.args, posix=True)
        except ValueError as exc:
            raise self.fail(str(exc)) from None

    def pairs(self) -> list[tuple[str, str]]:
        """ENV / LABEL / ARG arguments: `k=v k2="v 2"`, or the legacy `k v` form."""
        words = self.words()
        if not words:
            raise self.fail("needs arguments")
        if "=" not in words[0]:
            if self.cmd == "ARG":
                return [(words[0], "\0")]  # declared without a default
            if len(words) < 2:
                raise self.fail(f"{words[0]!r} has no value (write KEY=VALUE)")
            return [(words[0], self.args.strip().split(None, 1)[1])]
        out = []
        for w in words:
            key, sep, value = w.partition("=")
            if not sep or not key:
                raise self.fail(f"{w!r} is not KEY=VALUE")
            out.append((key, value))
        return out


def substitute(text: str, env: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        value = env.get(name)
        if m.group(2) == "-":
            return value if value else m.group(3)
        if m.group(2) == "+":
            return m.group(3) if value else ""
        return value or ""

    return _VAR.sub(one, text)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comments inside a continued instruction are dropped
        if not buf:
            start = n
        if raw.rstrip().endswith("\\"):
            buf.append(raw.rstrip()[:-1])
            continue
        buf.append(raw)
        out.append((start, " ".join(b.strip() for b in buf)))
        buf = []
    if buf:
        out.append((start, " ".join(b.strip() for b in buf)))
    return out


def parse(text: str) -> list[Instruction]:
    """The instructions of a single-stage Dockerfile; a `DockerfileError` names the bad line."""
    out: list[Instruction] = []
    seen_from = False
    for line, logical in _logical_lines(text):
        word, _, rest = logical.partition(" ")
        cmd = word.upper()
        where = f"Dockerfile line {line}"
        if cmd in UNSUPPORTED:
            raise errors.DockerfileError(f"{where}: {cmd} is not supported by Sandlot builds", line=line)
        if cmd not in KNOWN:
            raise errors.DockerfileError(f"{where}: unknown instruction {word!r}", line=line)
        flags: list[tuple[str, str]] = []
        rest = rest.strip()
        while cmd in ("COPY", "ADD", "FROM", "RUN") and rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags.append((name, value))
            rest = rest.strip()
        if not rest:
            raise errors.DockerfileError(f"{where}: {cmd} needs arguments", line=line)
        inst = Instruction(cmd, rest, line, tuple(flags))
        if cmd == "FROM":
            if seen_from:
                raise inst.fail("multi-stage builds (a second FROM) are not supported")
            if flags or len(inst.words()) != 1:
                raise inst.fail("only `FROM image` is supported (no AS, no --platform)")
            seen_from = True
        elif cmd != "ARG" and not seen_from:
            raise inst.fail("the first instruction must be FROM (or ARG)")
        if cmd in ("COPY", "ADD"):
            for name, _ in flags:
                if name not in ("chown", "chmod"):
                    raise inst.fail(f"--{name} is not supported (only --chown and --chmod)")
        elif cmd == "RUN" and flags:
            raise inst.fail(f"--{flags[0][0]} is not supported")
        out.append(inst)
    if not seen_from:
        raise errors.DockerfileError("the Dockerfile has no FROM instruction", line=0)
    return out
