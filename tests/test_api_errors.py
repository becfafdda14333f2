"""Raw HTTP: every error case of the spec answers in Magnum's shape, and changes nothing."""

import json
from pathlib import Path

import httpx
import pytest

from tests.support import Api

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "spec" / "magnum-samples"


def error(r) -> dict:
    body = r.json()
    assert list(body) == ["errors"], body
    return body["errors"][0]


def assert_error(r, status: int, title: str | None = None, detail: str | None = None, code: str = "client"):
    assert r.status_code == status, r.text
    assert r.headers["x-openstack-request-id"].startswith("req-")
    err = error(r)
    assert list(err) == ["request_id", "code", "status", "title", "detail", "links"]
    assert (err["request_id"], err["code"], err["status"], err["links"]) == ("", code, status, [])
    if title is not None:
        assert err["title"] == title
    if detail is not None:
        assert err["detail"] == detail
    return err


# Magnum's own answers, replayed where our service speaks the same words. The image
# samples name Glance ids; ours come from the image catalog, so those two are replayed
# with the catalog's names below instead.
REPLAYED = ["error_bad_json", "error_bad_limit", "error_bad_marker", "error_bad_sort_dir", "error_bad_sort_key",
            "error_delete_nonexistent", "error_invalid_enum", "error_method_not_allowed",
            "error_microversion_bad_service", "error_microversion_garbage", "error_missing_required_field",
            "error_negative_limit", "error_nonexistent_id", "error_nonexistent_name", "error_unknown_field",
            "error_unknown_path", "error_unsupported_major_microversion", "error_unsupported_microversion",
            "error_policy_no_roles", "error_patch_readonly_field"]


@pytest.mark.parametrize("name", REPLAYED)
def test_magnum_error_samples_replayed(server, name):
    sample = json.loads((SAMPLES / f"{name}.json").read_text())
    method, path = sample["request"].split(" ", 1)
    headers = {k: v for k, v in sample["request_headers"].items() if k.lower() != "content-length"}
    api = Api(server, project=headers.get("X-Project-Id", "p"), roles=headers.get("X-Roles", ""))
    body = sample["request_body"]
    if name == "error_patch_readonly_field":
        path = f"/v1/clustertemplates/{api.template()['uuid']}"
    if body:
        body = body.replace('"coe": "kubernetes", "image_id": "5b9a4c2e-8e7e-4a39-9c57-6f1e1f0c0001"',
                            '"coe": "swarm-mode", "image_id": "test-image"')
    r = httpx.request(method, server + path, headers=headers, content=body)
    assert r.status_code == sample["status"], r.text
    expected = sample["body"]["errors"][0]
    got = error(r)
    if name == "error_invalid_enum":
        # Jeroboam accepts more COEs than Magnum 23's single "kubernetes".
        assert got["title"] == expected["title"]
        assert got["detail"].startswith(expected["detail"])
        return
    assert got == expected
    if name in ("error_method_not_allowed",):
        assert r.headers["Allow"] == "DELETE, GET, PATCH"


def test_wrong_type_names_the_field(alice):
    r = alice.post("/v1/clustertemplates", json={"coe": "swarm-mode", "image_id": "test-image",
                                                 "docker_volume_size": "big"})
    assert_error(r, 400, "Invalid input for field/attribute docker_volume_size")


def test_lenient_inputs_are_converted(alice):
    t = alice.template(docker_volume_size="3", tls_disabled="True", labels={"a": 1, "b": True})
    assert (t["docker_volume_size"], t["tls_disabled"], t["labels"]) == (3, True, {"a": "1", "b": "True"})


def test_read_only_field_refused(alice):
    r = alice.post("/v1/clustertemplates", json={"coe": "swarm-mode", "image_id": "test-image",
                                                 "project_id": "other"})
    assert_error(r, 400, "Invalid input for field/attribute project_id",
                 "Invalid input for field/attribute project_id. Value: 'other'. Cannot set read only field.")


def test_unknown_query_argument(alice):
    assert_error(alice.get("/v1/clusters?name=x"), 400, 'Unknown argument: "name"')


def test_image_not_in_catalog(alice):
    r = alice.post("/v1/clustertemplates", json={"coe": "swarm-mode", "image_id": "no-such-image"})
    assert_error(r, 400, "Image no-such-image could not be found", "Image no-such-image could not be found.")


def test_template_without_a_serving_driver(alice):
    # bm (bare metal): a server_type Magnum knows and no provider here serves
    r = alice.post("/v1/clustertemplates", json={"coe": "kubernetes", "image_id": "jeroboam-node",
                                                 "server_type": "bm"})
    err = assert_error(r, 400, "Cluster type (bm, debian, kubernetes) is not supported by any loaded cluster driver")
    assert "(vm, testos, swarm-mode)" in err["detail"]


def test_bad_input_changes_nothing(alice):
    before = alice.get("/v1/clustertemplates").json()
    for body in ('{"coe": "swarm-mode"', '[]', '{"coe": 5, "image_id": "test-image"}',
                 '{"coe": "swarm-mode", "image_id": "test-image", "apiserver_port": 80}'):
        r = alice.post("/v1/clustertemplates", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
    assert alice.get("/v1/clustertemplates").json() == before


def test_cluster_with_unknown_template_is_400_before_1_10_and_404_after(server):
    for version, status in (("1.9", 400), ("1.10", 404)):
        r = Api(server, version=version).post("/v1/clusters", json={"cluster_template_id": "this-does-not-exist"})
        assert_error(r, status, "ClusterTemplate this-does-not-exist could not be found")


def test_endpoint_needs_newer_microversion(alice):
    t = alice.template()
    cluster, _ = alice.cluster(t["uuid"])
    old = Api(alice.url, version="1.6")
    old.http.headers.update({"X-Project-Id": alice.http.headers["X-Project-Id"]})
    r = old.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": 2})
    assert r.status_code == 406
    assert error(r)["detail"] == ("Version 1.6 was requested but the requested API patch is not supported for "
                                  "this version.")
    assert old.get(f"/v1/clusters/{cluster}/nodegroups").status_code == 406


def test_zero_nodes_needs_1_10(alice, server):
    t = alice.template()
    old = Api(server, project=alice.http.headers["X-Project-Id"], version="1.9")
    r = old.post("/v1/clusters", json={"cluster_template_id": t["uuid"], "node_count": 0})
    assert_error(r, 400, detail="Invalid input for field/attribute node_count. Value: '0'. Resizing a nodegroup "
                                "to zero is not supported in the provided microversion.")
    cluster, _ = alice.cluster(t["uuid"], node_count=0)
    assert alice.get(f"/v1/clusters/{cluster}").json()["node_count"] == 0


def test_rollback_query_needs_1_3(alice, server):
    t = alice.template()
    cluster, _ = alice.cluster(t["uuid"])
    old = Api(server, project=alice.http.headers["X-Project-Id"], version="1.2")
    ops = [{"op": "replace", "path": "/node_count", "value": 2}]
    assert_error(old.patch(f"/v1/clusters/{cluster}?rollback=True", json=ops), 400, 'Unknown argument: "rollback"')


def test_microversion_headers_on_success_and_error(alice):
    r = alice.get("/v1/clusters")
    assert r.headers["OpenStack-API-Version"] == "container-infrastructure-management 1.14"
    assert r.headers["OpenStack-API-Minimum-Version"] == "container-infrastructure-management 1.1"
    assert r.headers["OpenStack-API-Maximum-Version"] == "container-infrastructure-management 1.14"
    assert r.headers["Vary"] == "OpenStack-API-Version"
    r = alice.get("/v1/clusters/nope")
    assert r.status_code == 404 and r.headers["OpenStack-API-Version"].endswith("1.14")


def test_path_aliases_and_trailing_slash(alice):
    alice.template(name="alias")
    assert alice.get("/clustertemplates/").status_code == 200
    assert alice.get("/v1/clustertemplates/alias/").json()["name"] == "alias"
