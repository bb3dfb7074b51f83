"""Edits an OCI image layout the way the import tests need and umoci cannot: layers written
by hand (an opaque whiteout, hostile members) and multi-platform indexes.

    oci-layer.py opaque LAYOUT TAG      replace /data of TAG wholesale (.wh..wh..opq)
    oci-layer.py platforms LAYOUT TAG   tags 'multi' (another platform first, then this host's) and 'foreign'
    oci-layer.py hostile LAYOUT TAG     tags hostile-dotdot, hostile-symlink, hostile-whiteout over TAG
"""
import gzip
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

REF = "org.opencontainers.image.ref.name"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def put_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as blob:
        blob.write(data)
    return "sha256:" + digest


def get_blob(layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as blob:
        return blob.read()


def read_index(layout):
    with open(os.path.join(layout, "index.json")) as index:
        return json.load(index)


def tag(layout, name, descriptor):
    index = read_index(layout)
    index["manifests"] = [d for d in index["manifests"] if d.get("annotations", {}).get(REF) != name]
    descriptor = dict(descriptor, annotations={REF: name})
    index["manifests"].append(descriptor)
    with open(os.path.join(layout, "index.json"), "w") as out:
        json.dump(index, out)


def manifest_of(layout, name):
    for descriptor in read_index(layout)["manifests"]:
        if descriptor.get("annotations", {}).get(REF) == name:
            return descriptor
    raise SystemExit(f"no tag {name}")


def layer(members):
    """A gzip layer from (TarInfo fields, data) pairs; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            info.mtime = 1700000000
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


def add_layers(layout, source, target, layers):
    manifest = json.loads(get_blob(layout, manifest_of(layout, source)["digest"]))
    config = json.loads(get_blob(layout, manifest["config"]["digest"]))
    for members in layers:
        blob, diff_id = layer(members)
        manifest["layers"].append({"mediaType": LAYER, "digest": put_blob(layout, blob), "size": len(blob)})
        config["rootfs"]["diff_ids"].append(diff_id)
    config_bytes = json.dumps(config).encode()
    manifest["config"] = dict(manifest["config"], digest=put_blob(layout, config_bytes), size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    tag(layout, target, {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         "digest": put_blob(layout, manifest_bytes), "size": len(manifest_bytes)})


def directory(name):
    return ({"name": name, "type": tarfile.DIRTYPE, "mode": 0o755}, None)


def file(name, text):
    return ({"name": name, "mode": 0o644}, text.encode())


def host_architecture():
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def platforms(layout, source):
    host = manifest_of(layout, source)
    other = "s390x" if host_architecture() != "s390x" else "amd64"
    plain = {k: v for k, v in host.items() if k != "annotations"}
    entries = [dict(plain, platform={"architecture": other, "os": "linux"}),
               dict(plain, platform={"architecture": host_architecture(), "os": "linux"})]
    for name, manifests in (("multi", entries), ("foreign", entries[:1])):
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": manifests}).encode()
        tag(layout, name, {"mediaType": "application/vnd.oci.image.index.v1+json",
                           "digest": put_blob(layout, index), "size": len(index)})


def main():
    command, layout, source = sys.argv[1:4]
    if command == "opaque":
        add_layers(layout, source, source, [[directory("data"), file("data/.wh..wh..opq", ""),
                                             file("data/new", "written by layer 3\n")]])
    elif command == "platforms":
        platforms(layout, source)
    elif command == "hostile":
        add_layers(layout, source, "hostile-dotdot", [[file("../escaped", "out of the root\n")]])
        add_layers(layout, source, "hostile-symlink",
                   [[({"name": "etc/evil", "type": tarfile.SYMTYPE, "linkname": "/"}, None)],
                    [file("etc/evil/tmp/pwned", "through a symlink\n")]])
        add_layers(layout, source, "hostile-whiteout", [[file("etc/../../.wh.victim", "")]])
    else:
        raise SystemExit(__doc__)


main()
