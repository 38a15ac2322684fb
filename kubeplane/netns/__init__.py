"""The lab: Nodes and Pods as network namespaces, real links and routes, real workloads."""
