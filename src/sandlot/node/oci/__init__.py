"""OCI images on the node: references, registry pulls, the layer store, templates.

- `reference`: parse `host:port/repo:tag@digest`.
- `registry`: the distribution API v2 client (auth, manifests, verified blobs).
- `layers`: the content-addressed store of unpacked layers (one overlay lower each).
- `unpack`: apply one layer tarball exactly as the OCI spec says.
- `pull`: a reference to a template: resolve, download, verify, unpack.
- `layout`: read OCI image layout directories and `docker save` tarballs.
"""
