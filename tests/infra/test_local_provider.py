"""Provider pieces that need no swarm: names, base image, networks and address pools."""

import ipaddress
import json
import subprocess
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from jeroboam.infra.local import InfraError, LocalProvider, NodeSpec
from jeroboam.infra.local.images import _is_static_elf, build_busybox_tar
from jeroboam.pki import new_ca


def test_names_are_deterministic_and_fit_link_names(provider):
    again = LocalProvider(str(provider.state_dir), prefix=provider.prefix)
    assert again.node_name("n-1") == provider.node_name("n-1") != provider.node_name("n-2")
    assert again.network_name("c-1") == provider.network_name("c-1")
    for name in (provider.node_name("n-1"), provider._veth(provider.node_name("n-1")),
                 provider.network_name("c-1")):
        assert len(name) <= 15


def test_base_image_is_a_static_busybox_rootfs(provider, tmp_path):
    with tarfile.open(provider.base_image.path) as tar:
        names = tar.getnames()
        assert tar.getmember("bin/sh").linkname == "busybox"
        tar.extract("bin/busybox", tmp_path)
    assert {"bin/busybox", "etc/passwd", "etc/group", "tmp"} <= set(names)
    assert _is_static_elf(str(tmp_path / "bin/busybox"))


def test_base_image_built_by_several_at_once(tmp_path):
    """Workers starting together each build the base image: all of them get it, whole."""
    dest = tmp_path / "images" / "busybox.tar"
    together = threading.Barrier(6)

    def build():
        together.wait()
        return build_busybox_tar(dest)
    with ThreadPoolExecutor(6) as pool:
        built = [f.result() for f in [pool.submit(build) for _ in range(6)]]
    assert built == [dest] * 6
    with tarfile.open(dest) as tar:
        assert tar.getmember("bin/sh").linkname == "busybox"
    assert [p.name for p in dest.parent.iterdir()] == ["busybox.tar"]


def test_network_create_is_idempotent_and_delete_removes_bridge(provider):
    first = provider.create_network("unit-net")
    try:
        assert provider.create_network("unit-net") == first
        link = json.loads(subprocess.run(["ip", "-j", "addr", "show", first.name],
                                         capture_output=True, text=True, check=True).stdout)[0]
        assert link["address"] == first.mac
        assert [a["local"] for a in link["addr_info"] if a["family"] == "inet"] == [first.gateway]
        second = provider.create_network("unit-net-2")
        try:
            a, b = ipaddress.ip_network(first.subnet), ipaddress.ip_network(second.subnet)
            assert not a.overlaps(b)
        finally:
            provider.delete_network("unit-net-2")
    finally:
        provider.delete_network("unit-net")
    assert provider.network_deleted("unit-net")


def test_address_pool_clashing_with_host_routes_is_refused(provider):
    routes = json.loads(subprocess.run(["ip", "-4", "-j", "route", "show", "table", "main"],
                                       capture_output=True, text=True, check=True).stdout)
    host_net = next((ipaddress.ip_network(r["dst"]) for r in routes
                     if r["dst"] != "default" and ipaddress.ip_network(r["dst"]).prefixlen <= 24),
                    None)
    if host_net is None:
        pytest.skip("the host has no route to clash with")
    pool = next(host_net.subnets(new_prefix=24))
    clashing = LocalProvider(str(provider.state_dir), prefix=provider.prefix,
                             address_pools=(str(pool),))
    with pytest.raises(InfraError, match="allocate network"):
        clashing.create_network("unit-clash")
    with pytest.raises(InfraError, match="overlaps"):
        provider.create_network("unit-clash", subnet=str(pool))
    assert clashing.get_network("unit-clash") is None
    # the default pools skip what the host routes
    default = provider.create_network("unit-default")
    try:
        assert not ipaddress.ip_network(default.subnet).overlaps(host_net)
    finally:
        provider.delete_network("unit-default")


def test_dockerd_that_cannot_start_fails_naming_the_step(provider):
    broken = LocalProvider(str(provider.state_dir), prefix=provider.prefix,
                           storage_driver="no-such-driver")
    broken.create_network("unit-broken")
    name = broken.node_name("unit-broken-node")
    try:
        broken.create_node(NodeSpec("unit-broken-node", "unit-broken"), new_ca("unit"))
        with pytest.raises(InfraError, match="start dockerd") as failure:
            broken.wait_nodes([name], timeout=30)
        assert "no-such-driver" in failure.value.detail
    finally:
        broken.destroy_nodes([name])
        broken.delete_network("unit-broken")
