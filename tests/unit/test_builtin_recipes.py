"""A built-in template follows its recipe: a node whose store holds an image made by an older
recipe builds it afresh on its next use (and keeps the old one if that build fails)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sandlot import errors
from sandlot.node import images as builtin
from sandlot.node.oci.store import ImageStore


def _first(fs: Path, progress: object) -> builtin.ImageConfig:
    (fs / "recipe").write_text("first")
    return builtin.ImageConfig(env={}, cwd="/", user="root", cmd=["/bin/sh"])


def _second(fs: Path, progress: object) -> builtin.ImageConfig:
    (fs / "recipe").write_text("second")
    return builtin.ImageConfig(env={}, cwd="/", user="root", cmd=["/bin/sh"])


def _broken(fs: Path, progress: object) -> builtin.ImageConfig:
    raise errors.InternalError("apt-get update failed: no network")


def _made_by(image: builtin.Image) -> str:
    return (image.layers[-1] / "recipe").read_text()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    monkeypatch.setitem(builtin.BUILDERS, "recipe-test", _first)
    return ImageStore(tmp_path / "store")


def test_an_unchanged_recipe_reuses_its_image(store: ImageStore) -> None:
    made = store.ensure("recipe-test", progress=lambda _: None)
    again = ImageStore(store.root).ensure("recipe-test", progress=lambda _: None)
    assert again.layers == made.layers and _made_by(again) == "first"


def test_a_changed_recipe_builds_afresh(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    old = store.ensure("recipe-test", progress=lambda _: None)
    monkeypatch.setitem(builtin.BUILDERS, "recipe-test", _second)
    new = ImageStore(store.root).ensure("recipe-test", progress=lambda _: None)  # a node started after an upgrade
    assert _made_by(new) == "second" and new.layers != old.layers
    assert _made_by(ImageStore(store.root).get("recipe-test")) == "second"  # published for every user of the store


def test_a_failed_rebuild_keeps_the_image_there_was(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = store.ensure("recipe-test", progress=lambda _: None)
    monkeypatch.setitem(builtin.BUILDERS, "recipe-test", _broken)
    upgraded = ImageStore(store.root)
    with caplog.at_level(logging.WARNING, logger="sandlot.node"):
        kept = upgraded.ensure("recipe-test", progress=lambda _: None)
    assert kept.layers == old.layers and "no network" in caplog.text
    caplog.clear()
    assert upgraded.ensure("recipe-test", progress=lambda _: None).layers == old.layers
    assert "rebuilding it failed" not in caplog.text  # tried once per process, not on every create


def test_a_template_of_a_users_own_under_a_built_in_name_is_left_alone(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = store.ensure("recipe-test", progress=lambda _: None)
    with store._name_lock("recipe-test"):  # as an import or a pull publishes under that name
        store._publish("recipe-test", [made.layers[-1].parent.name], {}, source="docker://example/x", digest="")
    monkeypatch.setitem(builtin.BUILDERS, "recipe-test", _second)
    assert _made_by(ImageStore(store.root).ensure("recipe-test", progress=lambda _: None)) == "first"
