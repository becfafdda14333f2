"""The Kubernetes driver's health monitor: what Magnum's Kubernetes monitor reports (the API's
/healthz and each node's Ready condition), and auto-heal behind the same label as Swarm."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from jeroboam import states
from jeroboam.db.models import Cluster, ClusterTemplate, NodeGroup
from jeroboam.drivers.nodes import node_key
from jeroboam.drivers.swarm_health import HEALTHY, WATCHED, Monitor as SwarmMonitor, auto_heal
from jeroboam.infra import provider_for
from jeroboam.pki import KeyPair

from .kubernetes import assess, dead
from .kubernetes_api import KubeAPI
from .stack import parallel

# A dead kubelet's node turns NotReady after the node controller's grace period (8 s on
# namespace nodes, stretched by the provider's time_scale);
# one round every 2 s keeps UNHEALTHY within 15 s of the death.
MONITOR_INTERVAL = 2.0
API_TIMEOUT = 3


class Monitor(SwarmMonitor):
    """Swarm's monitor (its round, its auto-heal task) with Kubernetes' own view of health:
    the cluster's API, asked from here with a certificate from the cluster's CA."""

    def __call__(self, session_factory) -> None:
        with session_factory() as session:
            clusters = session.execute(
                sa.select(Cluster.uuid, Cluster.status, Cluster.labels, Cluster.health_status,
                          Cluster.health_status_reason, Cluster.api_address,
                          Cluster.ca_cert_pem, Cluster.ca_key_pem, ClusterTemplate.server_type)
                .join(ClusterTemplate, ClusterTemplate.uuid == Cluster.cluster_template_id)
                .where(ClusterTemplate.driver == self.driver_name, Cluster.status.in_(WATCHED),
                       Cluster.api_address.is_not(None))
            ).all()
        if not clusters:
            return

        def check(cluster):
            scale = provider_for(cluster.server_type, self.settings).time_scale
            api = KubeAPI(cluster.api_address, KeyPair(cluster.ca_cert_pem, cluster.ca_key_pem),
                          timeout=API_TIMEOUT * scale)
            return assess(api)

        results = parallel(check, clusters)
        heal = [c for c, (status, _) in zip(clusters, results)
                if status != HEALTHY and c.status in states.STABLE_STATUSES
                and auto_heal(c.labels)]
        for cluster, (status, reason) in zip(clusters, results):
            if (status, reason) != (cluster.health_status, cluster.health_status_reason):
                with session_factory() as session, session.begin():
                    session.execute(sa.update(Cluster).where(Cluster.uuid == cluster.uuid)
                                    .values(health_status=status, health_status_reason=reason))
        if not heal:
            return
        with session_factory() as session:
            workers = set(session.scalars(sa.select(NodeGroup.uuid).where(
                NodeGroup.cluster_id.in_([c.uuid for c in heal]), NodeGroup.role != "master")))
        nodes = defaultdict(list)  # workers only: masters (etcd members) are not replaced
        for server_type in {c.server_type for c in heal}:
            provider = provider_for(server_type, self.settings)
            for node in provider.nodes():
                if (key := node_key(node)) is not None and key[1] in workers:
                    nodes[key[0]].append(node)
        for cluster in heal:
            provider = provider_for(cluster.server_type, self.settings)
            gone = dead(provider, nodes.get(cluster.uuid, []))
            if gone:
                self.heal(session_factory, cluster.uuid, gone)
