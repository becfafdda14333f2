"""Images without a registry: a busybox base image built on the host, and local tarballs."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker

from .host import InfraError

BASE_IMAGE = "busybox:latest"


@dataclass(frozen=True)
class ImageTarball:
    """A tarball to put into every node: a ``docker save`` archive (its own tags are used),
    or a root file system imported as ``name``."""

    path: str
    name: str | None = None


def _is_static_elf(path: str) -> bool:
    """True when the ELF file has no program interpreter (PT_INTERP), i.e. is static."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: Debian amd64/arm64
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def build_busybox_tar(dest: Path) -> Path:
    """Write a rootfs tarball holding a static busybox and its applets (cached at ``dest``)."""
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    busybox = shutil.which("busybox")
    if busybox is None or not _is_static_elf(busybox):
        raise InfraError("build base image",
                         "a static busybox is needed (busybox-static); run scripts/host-prereqs.sh")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a temporary file of its own: workers starting together each build it (same content)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
            for d, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777)):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            tar.add(busybox, "bin/busybox", recursive=False)
            for applet in applets:
                if applet != "busybox":
                    info = tarfile.TarInfo(f"bin/{applet}")
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
                    tar.addfile(info)
            for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                               ("etc/group", "root:x:0:\n")):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    return dest


@functools.lru_cache(maxsize=64)
def _saved_tags(path: str, mtime_ns: int, size: int) -> tuple[str, ...] | None:
    """RepoTags of a ``docker save`` archive, or None for a plain rootfs tarball."""
    with tarfile.open(path) as tar:
        try:
            member = tar.getmember("manifest.json")
        except KeyError:
            return None
        manifest = json.load(tar.extractfile(member))
    return tuple(tag for entry in manifest for tag in entry.get("RepoTags") or ())


def _has_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.api.inspect_image(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_images(client: docker.DockerClient, images: list[ImageTarball]) -> None:
    """Import or load each tarball unless its image is already there. Never pulls."""
    for image in images:
        try:
            st = os.stat(image.path)
        except FileNotFoundError:
            raise InfraError("import images", f"{image.path}: no such file") from None
        tags = _saved_tags(image.path, st.st_mtime_ns, st.st_size)
        if tags is None:
            if not image.name:
                raise InfraError("import images", f"{image.path} is a root file system "
                                 "tarball and needs an image name")
            if not _has_image(client, image.name):
                repo, tag = docker.utils.parse_repository_tag(image.name)
                client.api.import_image_from_file(image.path, repository=repo, tag=tag or "latest")
        elif not tags or not all(_has_image(client, t) for t in tags):
            with open(image.path, "rb") as f:
                client.api.load_image(f)
