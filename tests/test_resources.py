"""Isolation, pagination, certificates, quotas, stats, federations, root documents."""

import uuid

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support import Api


def _other(server):
    return Api(server, project=f"p-{uuid.uuid4().hex[:8]}", user="u-bob")


def test_projects_are_isolated_and_admin_sees_all(alice, admin, server):
    bob = _other(server)
    t = alice.template(name="private")
    cluster, task = alice.cluster(t["uuid"], name="alices")
    assert bob.get(f"/v1/clustertemplates/{t['uuid']}").status_code == 404
    assert bob.get(f"/v1/clusters/{cluster}").status_code == 404
    assert bob.get("/v1/clusters/alices").status_code == 404
    assert bob.delete(f"/v1/clusters/{cluster}").status_code == 404
    assert bob.get(f"/v1/tasks/{task}").status_code == 404
    assert cluster not in [c["uuid"] for c in bob.get("/v1/clusters").json()["clusters"]]
    assert bob.get(f"/v1/certificates/{cluster}").status_code == 404
    assert admin.get(f"/v1/clusters/{cluster}").status_code == 200
    assert cluster in [c["uuid"] for c in admin.get("/v1/clusters?limit=1000").json()["clusters"]]


def test_public_templates_are_shared_hidden_ones_are_not(alice, admin, server):
    bob = _other(server)
    public = admin.template(name=f"pub-{uuid.uuid4().hex[:6]}", public=True)
    hidden = admin.template(name=f"hid-{uuid.uuid4().hex[:6]}", public=True, hidden=True)
    assert bob.get(f"/v1/clustertemplates/{public['uuid']}").json()["public"] is True
    assert bob.get(f"/v1/clustertemplates/{hidden['uuid']}").status_code == 404
    r = alice.post("/v1/clustertemplates", json={"coe": "swarm-mode", "image_id": "test-image", "public": True})
    assert r.status_code == 403


def test_pagination_with_next_links(alice):
    names = [f"pg{i}" for i in range(5)]
    for name in names:
        alice.template(name=name)
    seen, url = [], "/v1/clustertemplates?limit=2"
    while url:
        body = alice.get(url).json()
        # Public templates of other tests show here too; only ours are compared.
        seen += [t["name"] for t in body["clustertemplates"] if t["name"].startswith("pg")]
        assert len(body["clustertemplates"]) <= 2
        url = body.get("next", "").replace(alice.url, "")
    assert seen == names
    desc = alice.get("/v1/clustertemplates?sort_key=name&sort_dir=desc").json()["clustertemplates"]
    assert [t["name"] for t in desc if t["name"].startswith("pg")] == names[::-1]
    unknown = alice.get(f"/v1/clustertemplates?marker={uuid.uuid4()}")
    assert unknown.status_code == 404


def _csr(cn="admin", org="system:masters"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_certificates_sign_and_rotate(alice):
    t = alice.template()
    cluster, _ = alice.cluster(t["uuid"], name="certs")
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})
    ca_pem = alice.get(f"/v1/certificates/{cluster}").json()["pem"]
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    r = alice.post("/v1/certificates", json={"cluster_uuid": "certs", "csr": _csr()})
    assert r.status_code == 201, r.text
    cert = x509.load_pem_x509_certificate(r.json()["pem"].encode())
    assert cert.subject.rfc4514_string() == "O=system:masters,CN=admin"
    cert.verify_directly_issued_by(ca)
    assert alice.post("/v1/certificates", json={"cluster_uuid": "nope", "csr": _csr()}).status_code == 400
    assert alice.post("/v1/certificates", json={"cluster_uuid": cluster, "csr": "garbage"}).status_code == 400
    r = alice.patch(f"/v1/certificates/{cluster}", content=b"", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.json() == {"uuid": cluster}
    alice.wait_cluster(cluster, {"UPDATE_COMPLETE"})
    assert alice.get(f"/v1/certificates/{cluster}").json()["pem"] != ca_pem


def test_quotas_limit_cluster_creation(admin, server):
    project = f"p-{uuid.uuid4().hex[:8]}"
    user = Api(server, project=project)
    assert user.get(f"/v1/quotas/{project}/Cluster").json() == {
        "project_id": project, "resource": "Cluster", "hard_limit": 20}
    assert user.post("/v1/quotas", json={"project_id": project, "hard_limit": 1}).status_code == 403
    r = admin.post("/v1/quotas", json={"project_id": project, "resource": "Cluster", "hard_limit": 1})
    assert r.status_code == 201 and r.json()["hard_limit"] == 1
    assert admin.post("/v1/quotas", json={"project_id": project, "hard_limit": 1}).status_code == 409
    t = user.template()
    user.cluster(t["uuid"])
    r = user.post("/v1/clusters", json={"cluster_template_id": t["uuid"]})
    assert r.status_code == 403 and "quota" in r.json()["errors"][0]["detail"]
    r = admin.patch(f"/v1/quotas/{project}/Cluster", json={"project_id": project, "resource": "Cluster",
                                                            "hard_limit": 2})
    assert r.status_code == 202 and r.json()["hard_limit"] == 2
    user.cluster(t["uuid"])
    stats = user.get("/v1/stats").json()
    assert stats == {"clusters": 2, "nodes": 4}
    assert user.get("/v1/stats?project_id=someone-else").status_code == 403
    assert user.get("/v1/stats?type=nodes").status_code == 400
    assert admin.delete(f"/v1/quotas/{project}/Cluster").status_code == 204
    assert admin.delete(f"/v1/quotas/{project}/Cluster").status_code == 404


def test_federations(alice):
    t = alice.template()
    host, _ = alice.cluster(t["uuid"])
    member, _ = alice.cluster(t["uuid"])
    r = alice.post("/v1/federations", json={"name": "fed", "hostcluster_id": host,
                                            "properties": {"dns-zone": "example.com."}})
    assert r.status_code == 202
    fed = r.json()["uuid"]
    assert alice.post("/v1/federations", json={"hostcluster_id": host}).status_code == 400
    join = [{"op": "add", "path": "/member_ids", "value": member}]
    assert alice.patch(f"/v1/federations/{fed}", json=join).status_code == 202
    assert alice.get(f"/v1/federations/{fed}").json()["member_ids"] == [member]
    assert alice.patch(f"/v1/federations/{fed}", json=join).status_code == 409
    leave = [{"op": "remove", "path": "/member_ids", "value": member}]
    assert alice.patch(f"/v1/federations/{fed}", json=leave).status_code == 202
    assert alice.get("/v1/federations").json()["federations"][0]["member_ids"] == []
    assert alice.delete(f"/v1/federations/{fed}").status_code == 204


def test_root_documents_and_openapi(server):
    root = httpx.get(server + "/").json()
    assert root["versions"][0]["max_version"] == "1.14" and "OpenStack-API-Version" not in httpx.get(server).headers
    v1 = httpx.get(server + "/v1")
    assert v1.headers["OpenStack-API-Version"].endswith("1.1")
    assert v1.json()["clusters"][1] == {"href": f"{server}/clusters/", "rel": "bookmark"}
    doc = httpx.get(server + "/v1/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    create = doc["paths"]["/v1/clusters"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["node_count"]["minimum"] == 0
    assert create["x-body-schema-by-microversion"]["1.1"]["properties"]["node_count"]["minimum"] == 1
    assert "/v1/tasks/{ident}" in doc["paths"]


def test_mservices_need_admin(alice, admin):
    assert alice.get("/v1/mservices").status_code == 403
    services = admin.get("/v1/mservices").json()["mservices"]
    assert services[0]["binary"] == "magnum-conductor" and services[0]["state"] == "up"
