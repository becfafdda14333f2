"""Where Jeroboam used to answer differently from Magnum: each test replays the request
magnum-tempest-plugin or gophercloud sent, and expects what Magnum answers."""

import uuid

from tests.support import Api


def _detail(response) -> str:
    return response.json()["errors"][0]["detail"]


def test_template_create_accepts_cluster_distro_and_takes_the_images(alice):
    # gophercloud's CreateOpts sends cluster_distro; Magnum accepts it and overwrites it from the image.
    r = alice.post("/v1/clustertemplates", json={
        "name": "with-distro", "coe": "swarm-mode", "image_id": "test-image", "cluster_distro": "fedora-coreos",
        "server_type": "vm", "docker_volume_size": 3, "labels": {}})
    assert r.status_code == 201, r.text
    assert r.json()["cluster_distro"] == "testos"
    assert alice.get(f"/v1/clustertemplates/{r.json()['uuid']}").json()["cluster_distro"] == "testos"


def test_network_and_volume_drivers_are_checked_against_the_coe(alice):
    base = {"name": "refused", "coe": "swarm-mode", "image_id": "test-image"}
    bad_network = alice.post("/v1/clustertemplates", json={**base, "network_driver": "invalid_network_driver"})
    assert bad_network.status_code == 400
    assert _detail(bad_network) == ("Network driver type invalid_network_driver is not supported, "
                                    "expecting a docker/flannel/unspecified network driver.")
    bad_volume = alice.post("/v1/clustertemplates", json={**base, "volume_driver": "invalid_volume_driver"})
    assert bad_volume.status_code == 400
    assert _detail(bad_volume) == ("Volume driver type invalid_volume_driver is not supported, "
                                   "expecting a rexray/unspecified volume driver.")
    # Kubernetes supports cilium, but Magnum's default configuration does not allow it.
    cilium = alice.post("/v1/clustertemplates", json={**base, "coe": "kubernetes", "network_driver": "cilium"})
    assert cilium.status_code == 400
    assert _detail(cilium).startswith("Network driver type cilium is not allowed, expecting a "
                                      "flannel/calico/unspecified network driver.")
    assert "refused" not in [t["name"] for t in alice.get("/v1/clustertemplates").json()["clustertemplates"]]
    # Unspecified means the COE's default; a supported one is kept.
    assert alice.template()["network_driver"] == "docker"
    template = alice.template(network_driver="flannel", volume_driver="rexray")
    assert (template["network_driver"], template["volume_driver"]) == ("flannel", "rexray")
    # An update is checked the same way, and changes nothing when refused.
    r = alice.patch(f"/v1/clustertemplates/{template['uuid']}",
                    json=[{"op": "replace", "path": "/volume_driver", "value": "cinder"}])
    assert r.status_code == 400 and "Volume driver type cinder is not supported" in _detail(r)
    assert alice.get(f"/v1/clustertemplates/{template['uuid']}").json()["volume_driver"] == "rexray"


def test_patch_refuses_integers_sent_as_strings(alice):
    template = alice.template()
    r = alice.patch(f"/v1/clustertemplates/{template['uuid']}",
                    json=[{"op": "replace", "path": "/docker_volume_size", "value": "10"}])
    assert r.status_code == 400
    assert _detail(r) == ("Invalid input for field/attribute docker_volume_size. Value: '10'. "
                          "'<' not supported between instances of 'str' and 'int'")
    assert alice.get(f"/v1/clustertemplates/{template['uuid']}").json()["docker_volume_size"] is None
    ok = alice.patch(f"/v1/clustertemplates/{template['uuid']}",
                     json=[{"op": "replace", "path": "/docker_volume_size", "value": 10}])
    assert ok.status_code == 200 and ok.json()["docker_volume_size"] == 10

    cluster, _ = alice.cluster(template["uuid"], name="strings", node_count=1)
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})
    r = alice.patch(f"/v1/clusters/{cluster}", json=[{"op": "replace", "path": "/node_count", "value": "2"}])
    assert r.status_code == 400
    assert _detail(r) == ("Invalid input for field/attribute node_count. Value: '2'. "
                          "'<' not supported between instances of 'str' and 'int'")
    assert alice.get(f"/v1/clusters/{cluster}").json()["node_count"] == 1


def test_member_alone_reads_its_project_and_reader_alone_cannot_write(server):
    project = f"p-{uuid.uuid4().hex[:8]}"
    member = Api(server, project=project, user="u-member", roles="member")
    reader = Api(server, project=project, user="u-reader", roles="reader")
    template = member.template(name="members")
    for path in ("/v1/clustertemplates", f"/v1/clustertemplates/{template['uuid']}", "/v1/clusters", "/v1/stats"):
        assert member.get(path).status_code == 200, path
        assert reader.get(path).status_code == 200, path
    assert reader.post("/v1/clustertemplates", json={"coe": "swarm-mode", "image_id": "test-image"}).status_code == 403
    # admin implies member and reader: an admin-only caller may read and write in its project.
    boss = Api(server, project=project, user="u-boss", roles="admin")
    assert boss.get(f"/v1/clustertemplates/{template['uuid']}").status_code == 200
