"""The kubeplane daemon: sync runners, health, metrics, the HTTP API and the wiring of `kubeplane up`."""
