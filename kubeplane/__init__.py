"""kubeplane: the Kubernetes service data plane (kube-proxy and cluster DNS), emulated in network namespaces."""

__version__ = "0.1.0"
