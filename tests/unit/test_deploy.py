"""deploy/: the Kubernetes kustomize base renders and validates against the API schemas
(offline, kubernetes-validate), and the systemd units name the commands the CLI has."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"


def _render() -> list[dict[str, Any]]:
    """What `kubectl apply -k` would apply: each resource, in the namespace, with the image set."""
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / resource).read_text()):
            doc["metadata"]["namespace"] = kustomization["namespace"]
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []):
                c["image"] = images.get(c["image"], c["image"])
            docs.append(doc)
    return docs


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
