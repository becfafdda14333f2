"""/v1/certificates (the cluster CA, CSR signing, CA rotation) and /v1/credentials (1.12+)."""

from __future__ import annotations

import sqlalchemy as sa

from jeroboam import pki
from jeroboam.api import schemas
from jeroboam.api.clusters import accepted, driver_of, lookup as lookup_cluster
from jeroboam.api.errors import BadRequest, NotFound
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.db.models import ClusterTemplate


def _body(call, cluster, pem: str) -> dict:
    return {"cluster_uuid": cluster.uuid, "pem": pem, "links": call.link("certificates", cluster.uuid)}


def show_ca(call):
    cluster = lookup_cluster(call, call.path["cluster"])
    call.state.policy.authorize("certificate:get", call.ctx, cluster.project_id, cluster.user_id)
    # One CA per cluster serves every ca_cert_type (Docker has no etcd or front-proxy CA).
    return _body(call, cluster, cluster.ca_cert_pem)


def sign(call):
    try:
        cluster = lookup_cluster(call, call.body["cluster_uuid"])
    except NotFound as exc:
        raise BadRequest(exc.message) from None
    call.state.policy.authorize("certificate:create", call.ctx, cluster.project_id, cluster.user_id)
    try:
        pem = pki.sign_csr(pki.KeyPair(cluster.ca_cert_pem, cluster.ca_key_pem), call.body["csr"])
    except pki.InvalidCSR as exc:
        raise BadRequest(str(exc)) from None
    return Reply({**_body(call, cluster, pem), "csr": call.body["csr"]}, 201)


def rotate_ca(call):
    cluster = lookup_cluster(call, call.path["cluster"])
    call.state.policy.authorize("certificate:rotate_ca", call.ctx, cluster.project_id)
    tls_disabled = call.session.scalar(
        sa.select(ClusterTemplate.tls_disabled).where(ClusterTemplate.uuid == cluster.cluster_template_id))
    if tls_disabled:
        raise BadRequest("Rotating the CA certificate on a non-TLS cluster is not supported.")
    return accepted(call, cluster, "cluster.rotate_ca", [(cluster, "update")])


def rotate_credential(call):
    cluster = lookup_cluster(call, call.path["cluster"])
    call.state.policy.authorize("credential:rotate", call.ctx, cluster.project_id)
    template = call.session.scalars(
        sa.select(ClusterTemplate).where(ClusterTemplate.uuid == cluster.cluster_template_id)).one()
    driver = driver_of(call, template)
    rotate = getattr(driver, "rotate_credential", None)
    if rotate is None:
        raise BadRequest(f"Rotating credentials is not supported by the {driver.name} driver: "
                         "its clusters hold no cloud credential.")
    rotate(cluster)
    return Reply({"uuid": cluster.uuid}, 202)


CERT = {"type": "object", "properties": {"cluster_uuid": {"type": "string"}, "pem": {"type": "string"},
                                         "csr": {"type": "string"}, "links": {"type": "array"}}}

RESOURCES = [
    Resource("/v1/certificates",
             post=Endpoint(sign, "Sign a client CSR with the cluster's CA", 201, body=schemas.CERTIFICATE_CREATE,
                           response=CERT)),
    Resource("/v1/certificates/{cluster}",
             get=Endpoint(show_ca, "Show the cluster's CA certificate", query=schemas.CERTIFICATE_QUERY,
                          response=CERT),
             patch=Endpoint(rotate_ca, "Rotate the cluster's CA (asynchronous)", 202)),
    Resource("/v1/credentials/{cluster}",
             patch=Endpoint(rotate_credential, "Rotate the cluster's cloud credential", 202, (1, 12))),
]
