"""Where cluster state comes from: manifest files (`manifests`) or a real API server (`kubernetes`).

Every source ends the same way, by handing whole `Cluster` snapshots to the `ClusterStore`, which turns them
into change sets for the proxy, DNS and the lab.
"""
