"""Who may see, use and replace which template.

Built-in templates, templates an admin makes and images pulled under their
own reference without credentials are shared by every team. Every other
template a team makes (a build, an import, a pull under another name or with
credentials) is that team's: only its keys and admins see it, start sandboxes
from it, build FROM it or export it; another team gets "not found", as for a
sandbox. A name another team (or the server) holds cannot be taken over: 409.
"""

from __future__ import annotations

from sandlot import errors
from sandlot.api.auth import Principal
from sandlot.models import TemplateInfo

__all__ = ["may_use", "usable", "writer"]


def writer(who: Principal) -> str | None:
    """The team a template made by `who` belongs to (None: shared, for an admin's)."""
    return None if who.admin else who.team


def may_use(template: TemplateInfo, who: Principal) -> bool:
    return who.admin or template.owner is None or template.owner == who.team


def usable(template: TemplateInfo | None, name: str, who: Principal) -> TemplateInfo:
    """`template` when `who` may use it; ImageNotFoundError otherwise (names of other teams' do not leak)."""
    if template is None or not may_use(template, who):
        raise errors.ImageNotFoundError(f"template {name!r} not found")
    return template
