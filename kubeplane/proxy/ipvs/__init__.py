"""kube-proxy's IPVS mode: desired state from the shared plan (pure), text rendering, and a reconciling
proxier that programs IPVS over netlink (pyroute2), kube-ipvs0 addresses, ipsets and a few iptables rules."""
