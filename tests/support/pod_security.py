"""The Pod Security Standard "restricted" (Kubernetes v1.30 rules), checked on a pod spec.

A pure function, so a test can show both that the manifests pass and that each rule can fail.
It follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline
rules included, as "restricted" includes them): what the API server's admission would refuse
in a namespace labelled `pod-security.kubernetes.io/enforce: restricted`. AppArmor, SELinux
and sysctl rules are checked only as far as these manifests could break them (they set none).
"""

from __future__ import annotations

from typing import Any

# Volume types "restricted" allows (the spec's `volumes[*]` keys besides `name`).
ALLOWED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
ALLOWED_SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})


def restricted_violations(where: str, pod_spec: dict[str, Any]) -> list[str]:
    """Every way `pod_spec` breaks "restricted", each naming `where` and the field; [] if none.

    Container-level settings override the pod's, as in Kubernetes: runAsNonRoot and the
    seccomp profile may be set once on the pod or on every container.
    """
    problems: list[str] = []
    pod_context = pod_spec.get("securityContext") or {}
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(host_field):
            problems.append(f"{where}: spec.{host_field} must not be true")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"{where}: volume {volume['name']!r} has type {sorted(kinds - ALLOWED_VOLUME_TYPES)}")
    if pod_context.get("runAsUser") == 0:
        problems.append(f"{where}: spec.securityContext.runAsUser must not be 0")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP_TYPES:
        problems.append(f"{where}: spec.securityContext.seccompProfile.type is {pod_seccomp!r}")
    containers = [
        (kind, container)
        for kind in ("initContainers", "containers", "ephemeralContainers")
        for container in pod_spec.get(kind) or []
    ]
    if not containers:
        problems.append(f"{where}: no containers to check")
    for kind, container in containers:
        problems += _container_violations(f"{where}: {kind}[{container['name']}]", container, pod_context)
    return problems


def _container_violations(where: str, container: dict[str, Any], pod_context: dict[str, Any]) -> list[str]:
    context = container.get("securityContext") or {}
    problems: list[str] = []
    if context.get("privileged"):
        problems.append(f"{where}: securityContext.privileged must not be true")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append(f"{where}: securityContext.capabilities.drop must include ALL")
    added = set(capabilities.get("add") or []) - ALLOWED_ADDED_CAPABILITIES
    if added:
        problems.append(f"{where}: securityContext.capabilities.add has {sorted(added)}")
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        problems.append(f"{where}: runAsNonRoot must be true (container or pod securityContext)")
    if context.get("runAsUser") == 0:
        problems.append(f"{where}: securityContext.runAsUser must not be 0")
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP_TYPES:
        problems.append(f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (container or pod)")
    if context.get("procMount", "Default") != "Default":
        problems.append(f"{where}: securityContext.procMount must be Default")
    host_ports = [port["hostPort"] for port in container.get("ports") or [] if port.get("hostPort")]
    if host_ports:
        problems.append(f"{where}: ports use hostPort {host_ports}")
    return problems


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects a pod with `labels`."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True
