"""The cluster: membership, the agent and the primitives that reservations, replication and
HA build on. pyvz writes no consensus code: etcd v3 decides, this package is its client.

- etcd.py: the etcd v3 client (HTTP/JSON gateway, TLS with the cluster CA), reserve(),
  release() and Election
- pki.py: the cluster CA and each member's certificates (openssl)
- settings.py: $ROOT/etc/vz/cluster.conf
- keys.py: where everything lives in etcd (one place for the key layout)
- member.py: this host's etcd member (argv, start through systemd or a supervisor, stop)
- membership.py: init, join (and the admitting side), leave
- agent.py: the per-host process that holds the lease and publishes the host
- view.py: what `vzcluster status` and `vzcluster nodes` read
"""
