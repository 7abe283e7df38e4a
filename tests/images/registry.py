"""A real registry for the tests: Debian's `docker-registry`, on 127.0.0.1, optionally with htpasswd.

Test images are OCI layouts made with umoci from layer tarballs written here
(so each layer holds exactly the entries a test needs: whiteouts, opaque
directories, hard links, device nodes, xattrs), then pushed with skopeo.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import httpx

USER, PASSWORD = "tester", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TokenServer:
    """A bearer-token service for the registry's `auth: token`: JWTs (RS256, x5c) signed with openssl.

    It hands out tokens to USER/PASSWORD (Basic auth on the token request) only.
    """

    issuer, service = "sandlot-test-issuer", "sandlot-test-registry"

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = dir / "key.pem", dir / "cert.pem"
        _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
              "-out", str(self.cert), "-subj", "/CN=sandlot-test-token", "-days", "2"])  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], capture_output=True, check=True
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self.send_response(401)
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                body = json.dumps({"token": server.mint(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def mint(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":", 2) if scope.count(":") >= 2 else ("", "", "")
            if kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": USER, "aud": self.service, "exp": now + 600, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}  # fmt: skip
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(), capture_output=True,
            check=True,
        ).stdout  # fmt: skip
        return f"{signing_input}.{b64(sig)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Registry:
    dir: Path
    auth: bool = False
    token: TokenServer | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.dir / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if self.auth:
            htpasswd = self.dir / "htpasswd"
            out = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, check=True).stdout
            htpasswd.write_bytes(out)
            lines += ["auth:", "  htpasswd:", "    realm: sandlot-test", f"    path: {htpasswd}"]
        elif self.token:
            t = self.token
            lines += ["auth:", "  token:", f"    realm: {t.url}", f"    service: {t.service}",
                      f"    issuer: {t.issuer}", f"    rootcertbundle: {t.cert}"]  # fmt: skip
        (self.dir / "config.yml").write_text("\n".join(lines) + "\n")
        with open(self.dir / "registry.log", "wb") as log:
            cmd = ["docker-registry", "serve", str(self.dir / "config.yml")]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start: {(self.dir / 'registry.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def push(self, layout: Path, tag: str, repo: str, *, zstd: bool = False, all_: bool = False) -> str:
        """skopeo copy oci:layout:tag docker://host/repo; returns the reference pushed."""
        src = f"oci:{layout}:{tag}"
        if zstd:  # recompress into a scratch layout first: skopeo reuses blobs when pushing
            scratch = layout.parent / f"zstd-{tag}"
            shutil.rmtree(scratch, ignore_errors=True)
            _run(["skopeo", "copy", "--dest-compress-format", "zstd", src, f"oci:{scratch}:{tag}"])
            src = f"oci:{scratch}:{tag}"
        ref = f"{self.host}/{repo}"
        cmd = ["skopeo", "copy", "--dest-tls-verify=false"]
        if self.auth or self.token:
            cmd += ["--dest-creds", f"{USER}:{PASSWORD}"]
        if all_:
            cmd.append("--all")
        _run([*cmd, src, f"docker://{ref}"])
        return ref


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr}")


# ------------------------------------------------------------ layers and layouts


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **kw: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 1_700_000_000
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)


def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    _add(tar, name, type=tarfile.DIRTYPE, mode=mode)


def busybox_layer(path: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is needed"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "tmp", "opt", "opt/old", "root"):
            _dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", Path(busybox).read_bytes(), mode=0o755)
        for applet in ("sh", "ls", "cat", "echo", "stat", "id", "test", "env", "pwd", "getfattr", "wc", "find"):
            _add(tar, f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox", mode=0o777)
        _add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n")
        _add(tar, "etc/group", b"root:x:0:\nuser:x:1000:\n")
        _add(tar, "etc/motd", b"from the base layer\n")
        _add(tar, "etc/keep", b"kept\n")
        _add(tar, "opt/old/a", b"old a\n")
        _add(tar, "opt/old/b", b"old b\n")


def app_layer(path: Path) -> None:
    """Whiteout, opaque dir, hard link, a device node, ownership, xattrs and set-id bits."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _dir(tar, "etc")
        _add(tar, "etc/.wh.motd")
        _dir(tar, "opt/old")
        _add(tar, "opt/old/.wh..wh..opq")
        _add(tar, "opt/old/new", b"new in the app layer\n")
        _dir(tar, "app")
        _add(tar, "app/data.txt", b"hello from the app layer\n", uid=1000, gid=1000)
        _add(tar, "app/link.txt", type=tarfile.LNKTYPE, linkname="app/data.txt")
        _add(tar, "app/tool", b"#!/bin/sh\necho tool\n", mode=0o4755)
        info = tarfile.TarInfo("app/xattr.txt")
        info.size, info.mtime, info.mode = 3, 1_700_000_000, 0o644
        info.pax_headers = {"SCHILY.xattr.user.sandlot": "kept"}
        tar.addfile(info, io.BytesIO(b"xa\n"))
        _add(tar, "app/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)


def marker_layer(path: Path, text: str) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "platform", text.encode() + b"\n")


@dataclass
class Layouts:
    dir: Path

    @property
    def layout(self) -> Path:
        return self.dir / "layout"


def make_layouts(dir: Path) -> Layouts:
    """One OCI layout with tags `base`, `app`, `amd`, `arm` and `multi` (an index of amd + arm)."""
    lay = Layouts(dir)
    L = str(lay.layout)
    _run(["umoci", "init", "--layout", L])
    _run(["umoci", "new", "--image", f"{L}:empty"])
    busybox_layer(dir / "busybox.tar")
    _run(["umoci", "raw", "add-layer", "--image", f"{L}:empty", "--tag", "base", str(dir / "busybox.tar")])
    _run(
        [
            "umoci",
            "config",
            "--image",
            f"{L}:base",
            "--config.env",
            "PATH=/bin",
            "--config.env",
            "GREETING=hi",
            "--config.workingdir",
            "/etc",
            "--config.cmd",
            "/bin/sh",
        ]
    )
    app_layer(dir / "app.tar")
    _run(["umoci", "raw", "add-layer", "--image", f"{L}:base", "--tag", "app", str(dir / "app.tar")])
    for arch in ("amd64", "arm64"):
        marker_layer(dir / f"{arch}.tar", arch)
        tag = arch[:3]
        _run(["umoci", "raw", "add-layer", "--image", f"{L}:base", "--tag", tag, str(dir / f"{arch}.tar")])
        _run(["umoci", "config", "--image", f"{L}:{tag}", "--architecture", arch])
    _write_index(lay.layout, {"amd64": "amd", "arm64": "arm"}, "multi")
    return lay


def _write_index(layout: Path, tags: dict[str, str], new_tag: str) -> None:
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    manifests = []
    for arch, tag in tags.items():
        d = dict(by_tag[tag])
        d.pop("annotations", None)
        d["platform"] = {"os": "linux", "architecture": arch}
        manifests.append(d)
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    ).encode()
    digest = hashlib.sha256(body).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(body)
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": f"sha256:{digest}",
            "size": len(body),
            "annotations": {"org.opencontainers.image.ref.name": new_tag},
        }
    )
    index_path.write_text(json.dumps(index))
    os.sync()
