"""The E2B facade's request models and header rules, without a server."""

from __future__ import annotations

import pytest

from sandlot import errors
from sandlot.api.e2b.control import E2B_TEMPLATES, NewSandbox, e2b_template
from sandlot.api.e2b.envd_metadata import from_headers
from sandlot.node.image_e2b import E2B_BASE


def _new(**body: object) -> NewSandbox:
    return NewSandbox.model_validate({"templateID": "base", **body})


def test_lifecycle_maps_onto_sandlots_timeouts() -> None:
    assert _new().on_timeout() == "kill"
    assert _new(autoPause=True).on_timeout() == "pause"
    assert _new(autoPause=True, autoPauseMemory=False).on_timeout() == "hibernate"
    both = _new(autoPause=True, autoResume={"enabled": True})
    assert both.on_timeout() == "pause" and both.auto_resume.enabled
    assert _new(autoPause=True, autoResume=True).auto_resume.enabled  # the older, plain-flag form
    for bad in ({"autoResume": {"enabled": True}}, {"autoPause": True, "autoPauseMemory": False, "autoResume": True}):
        with pytest.raises(errors.InvalidArgumentError) as ei:
            _new(**bad).on_timeout()
        assert ei.value.field == "autoResume"


def test_internet_access_in_either_spelling() -> None:
    assert _new(allow_internet_access=False).sandlot_network().mode == "none"  # what the SDKs send now
    assert _new(allowInternetAccess=False).sandlot_network().mode == "none"
    assert _new().sandlot_network().mode == "full"


def test_e2b_base_is_known_by_its_e2b_name() -> None:
    assert E2B_TEMPLATES["base"] == E2B_BASE  # the API names the node's built-in without importing it
    assert e2b_template("e2b-base") == "base"
    assert e2b_template("debian") == "debian" and e2b_template("code-interpreter") == "code-interpreter"


def test_metadata_headers_follow_envds_rules() -> None:
    assert from_headers([("X-Metadata-Owner", "ana"), ("x-metadata-stage", "raw"), ("Other", "x")]) == {
        "owner": "ana",
        "stage": "raw",
    }
    assert from_headers([("content-type", "text/plain")]) == {}  # none: the upload clears them
    for bad in ([("x-metadata-", "v")], [("x-metadata-k", "caf\u00e9")], [("x-metadata-" + "k" * 247, "v")]):
        with pytest.raises(errors.InvalidArgumentError):
            from_headers(bad)
    with pytest.raises(errors.InvalidArgumentError, match="more than 4096"):
        from_headers([(f"x-metadata-k{i}", "v" * 1000) for i in range(5)])
