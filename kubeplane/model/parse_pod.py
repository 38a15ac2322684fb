"""`v1 Pod`: what endpoints, DNS and the lab need (placement, hostname, named ports, IPs, readiness).

Accepted: spec.{nodeName, hostname, subdomain, hostNetwork, containers[].{name, ports[].{name,
containerPort, protocol, hostPort}}}, status.{phase, podIP, podIPs[].ip, conditions[] (type Ready gives
readiness)}, metadata.deletionTimestamp (terminating).

The many Pod fields about running containers (image, env, volumes, probes...) are accepted silently: a real
Deployment's pod template pasted in must not drown the user in warnings. A Pod without `status` is taken as
Running with readiness left to the lab's workload (`ready=None`).
"""

from __future__ import annotations

from kubeplane.model.fields import Fields
from kubeplane.model.formats import dns1123_label_problem, dns1123_subdomain_problem, port_name_problem
from kubeplane.model.objects import Container, ContainerPort, ObjectMeta, Pod
from kubeplane.model.parse_service import PROTOCOLS

POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
CONDITION_STATUSES = ("True", "False", "Unknown")

_IGNORED_SPEC = (
    "volumes",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "dnsPolicy",
    "dnsConfig",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "securityContext",
    "schedulerName",
    "tolerations",
    "affinity",
    "nodeSelector",
    "priority",
    "priorityClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "imagePullSecrets",
    "initContainers",
    "ephemeralContainers",
    "readinessGates",
    "topologySpreadConstraints",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "hostPID",
    "hostIPC",
    "hostUsers",
    "runtimeClassName",
    "overhead",
    "os",
    "activeDeadlineSeconds",
    "hostAliases",
    "resourceClaims",
    "schedulingGates",
)
_IGNORED_CONTAINER = (
    "image",
    "command",
    "args",
    "env",
    "envFrom",
    "resources",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "imagePullPolicy",
    "securityContext",
    "workingDir",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "stdin",
    "stdinOnce",
    "tty",
    "resizePolicy",
    "restartPolicy",
)
_IGNORED_STATUS = (
    "hostIP",
    "hostIPs",
    "startTime",
    "containerStatuses",
    "initContainerStatuses",
    "ephemeralContainerStatuses",
    "qosClass",
    "message",
    "reason",
    "nominatedNodeName",
    "resize",
    "resourceClaimStatuses",
    "observedGeneration",
)


def parse_pod(doc: Fields, meta: ObjectMeta) -> tuple[Pod, ...]:
    spec = doc.section("spec")
    spec.ignore(*_IGNORED_SPEC)
    node_name = spec.checked("nodeName", dns1123_subdomain_problem) or ""
    hostname = spec.checked("hostname", dns1123_label_problem) or ""
    subdomain = spec.checked("subdomain", dns1123_label_problem) or ""
    host_network = spec.flag("hostNetwork") or False
    containers = _containers(spec)
    spec.finish()
    status = doc.section("status")
    status.ignore(*_IGNORED_STATUS)
    phase = status.enum("phase", POD_PHASES) or "Running"
    pod_ips = _pod_ips(status)
    ready = _ready_condition(status)
    status.finish()
    pod = Pod(
        meta=meta,
        node_name=node_name,
        hostname=hostname,
        subdomain=subdomain,
        containers=containers,
        pod_ips=pod_ips,
        phase=phase,
        ready=ready,
        host_network=host_network,
    )
    return (pod,)


def _containers(spec: Fields) -> tuple[Container, ...]:
    entries = spec.subs("containers")
    if not entries:
        spec.error("containers", "must have at least one container")
    container_names: set[str] = set()
    port_names: dict[str, str] = {}
    containers: list[Container] = []
    for i, entry in enumerate(entries):
        entry.ignore(*_IGNORED_CONTAINER)
        name = entry.checked("name", dns1123_label_problem, required=True) or f"container-{i}"
        if name in container_names:
            entry.error("name", f"duplicate container name {name!r}")
        container_names.add(name)
        ports: list[ContainerPort] = []
        for j, port_entry in enumerate(entry.subs("ports")):
            port_name = port_entry.checked("name", port_name_problem) or ""
            here = f"spec.containers[{i}].ports[{j}]"
            if port_name in port_names:
                port_entry.error("name", f"duplicate port name {port_name!r} (also {port_names[port_name]})")
            elif port_name:
                port_names[port_name] = here
            number = port_entry.port("containerPort", required=True)
            protocol = port_entry.enum("protocol", PROTOCOLS) or "TCP"
            port_entry.port("hostPort")
            port_entry.ignore("hostIP")
            port_entry.finish()
            if number is not None:
                ports.append(ContainerPort(container_port=number, protocol=protocol, name=port_name))
        entry.finish()
        containers.append(Container(name=name, ports=tuple(ports)))
    return tuple(containers)


def _pod_ips(status: Fields) -> tuple[str, ...]:
    single = status.ip("podIP")
    listed = []
    for i, entry in enumerate(status.subs("podIPs")):
        text = entry.text("ip", required=True)
        entry.finish()
        address = status.parse_address(f"podIPs[{i}].ip", text) if text else None
        if address is not None:
            listed.append(address)
    if single is not None and listed and listed[0] != single:
        status.error("podIPs[0].ip", f"must match status.podIP {str(single)!r}, got {str(listed[0])!r}")
    addresses = listed or ([single] if single is not None else [])
    if len(addresses) > 2 or (len(addresses) == 2 and addresses[0].version == addresses[1].version):
        status.error("podIPs", "must hold at most one address per IP family")
        return ()
    return tuple(str(a) for a in addresses)


def _ready_condition(status: Fields) -> bool | None:
    ready: bool | None = None
    for entry in status.subs("conditions"):
        condition_type = entry.text("type", required=True)
        condition_status = entry.enum("status", CONDITION_STATUSES, required=True)
        entry.ignore("lastProbeTime", "lastTransitionTime", "reason", "message", "observedGeneration")
        entry.finish()
        if condition_type == "Ready" and condition_status is not None:
            ready = {"True": True, "False": False}.get(condition_status)
    return ready
