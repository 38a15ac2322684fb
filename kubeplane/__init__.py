"""kubeplane: the Kubernetes service data plane (kube-proxy and cluster DNS), emulated in netns."""

__version__ = "0.1.0"
