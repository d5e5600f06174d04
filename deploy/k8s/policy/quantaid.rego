# Policies every rendered QuantaID manifest must meet (run by deploy/k8s/test.sh with conftest).
package main

import rego.v1

secret_like := `(?i)(password|passwd|token|secret|private|credential|api_?key)`

workload_kinds := {"Deployment", "StatefulSet", "DaemonSet", "Job"}

pod_spec := input.spec.template.spec if input.kind in workload_kinds

pod_spec := input.spec.jobTemplate.spec.template.spec if input.kind == "CronJob"

# Containers that run for the pod's whole life: main containers and native sidecars.
long_running contains c if {
	input.kind == "Deployment"
	some c in pod_spec.containers
}

long_running contains c if {
	input.kind == "Deployment"
	some c in pod_spec.initContainers
	c.restartPolicy == "Always"
}

all_containers contains c if {
	some c in pod_spec.containers
}

all_containers contains c if {
	some c in pod_spec.initContainers
}

deny contains msg if {
	some c in long_running
	not c.livenessProbe
	msg := sprintf("%s/%s: container %q has no liveness probe", [input.kind, input.metadata.name, c.name])
}

# Main containers need a readiness probe; a native sidecar may leave its readiness to the
# main container (the proxy's /ready asks the backend).
deny contains msg if {
	input.kind == "Deployment"
	some c in pod_spec.containers
	not c.readinessProbe
	msg := sprintf("%s/%s: container %q has no readiness probe", [input.kind, input.metadata.name, c.name])
}

deny contains msg if {
	input.kind == "Deployment"
	some c in long_running
	c.name == "backend"
	not c.startupProbe
	msg := sprintf("%s/%s: the backend has no startup probe to cover migrations", [input.kind, input.metadata.name])
}

deny contains msg if {
	input.kind == "Deployment"
	names := {c.name | some c in long_running}
	not names == {"proxy", "backend"}
	msg := sprintf("%s/%s: the pod must run the proxy and the backend, found %v", [input.kind, input.metadata.name, names])
}

deny contains msg if {
	some c in all_containers
	some kind in ["requests", "limits"]
	some res in ["cpu", "memory"]
	not c.resources[kind][res]
	msg := sprintf("%s/%s: container %q has no %s.%s", [input.kind, input.metadata.name, c.name, kind, res])
}

deny contains msg if {
	pod_spec
	not pod_spec.securityContext.runAsNonRoot == true
	msg := sprintf("%s/%s: the pod must set runAsNonRoot", [input.kind, input.metadata.name])
}

deny contains msg if {
	pod_spec
	not pod_spec.securityContext.seccompProfile.type == "RuntimeDefault"
	msg := sprintf("%s/%s: the pod must use the RuntimeDefault seccomp profile", [input.kind, input.metadata.name])
}

deny contains msg if {
	pod_spec
	not pod_spec.automountServiceAccountToken == false
	msg := sprintf("%s/%s: the pod must not mount a service-account token", [input.kind, input.metadata.name])
}

deny contains msg if {
	some c in all_containers
	not c.securityContext.readOnlyRootFilesystem == true
	msg := sprintf("%s/%s: container %q must have a read-only root filesystem", [input.kind, input.metadata.name, c.name])
}

deny contains msg if {
	some c in all_containers
	not c.securityContext.allowPrivilegeEscalation == false
	msg := sprintf("%s/%s: container %q must not allow privilege escalation", [input.kind, input.metadata.name, c.name])
}

deny contains msg if {
	some c in all_containers
	not "ALL" in object.get(c, ["securityContext", "capabilities", "drop"], [])
	msg := sprintf("%s/%s: container %q must drop all capabilities", [input.kind, input.metadata.name, c.name])
}

deny contains msg if {
	some c in all_containers
	some e in object.get(c, "env", [])
	regex.match(secret_like, e.name)
	e.value
	msg := sprintf("%s/%s: container %q sets %s as a literal; secrets come from a Secret", [input.kind, input.metadata.name, c.name, e.name])
}

deny contains msg if {
	input.kind == "ConfigMap"
	some key, _ in input.data
	regex.match(secret_like, key)
	msg := sprintf("ConfigMap/%s: %s looks like a secret and may not be in a ConfigMap", [input.metadata.name, key])
}

deny contains msg if {
	input.kind == "ConfigMap"
	some key, value in input.data
	regex.match(`(?i)(redis|postgres(ql)?)://[^/@\s]*:[^/@\s]+@`, value)
	msg := sprintf("ConfigMap/%s: %s holds a URL with a password", [input.metadata.name, key])
}

# The backend's API (8081) stays inside the pod: not in a Service, not a container port.
deny contains msg if {
	input.kind == "Service"
	some p in input.spec.ports
	backend_port(p)
	msg := sprintf("Service/%s: port %q exposes the backend's API", [input.metadata.name, p.name])
}

backend_port(p) if p.targetPort == 8081

backend_port(p) if p.port == 8081

backend_port(p) if p.targetPort == "backend"

backend_port(p) if p.targetPort == "backend-http"

deny contains msg if {
	some c in all_containers
	some p in object.get(c, "ports", [])
	p.containerPort == 8081
	msg := sprintf("%s/%s: container %q declares the backend's API port 8081", [input.kind, input.metadata.name, c.name])
}

deny contains msg if {
	input.kind == "ConfigMap"
	addr := input.data.QUANTAID_LISTEN_ADDR
	not startswith(addr, "127.0.0.1:")
	msg := sprintf("ConfigMap/%s: the backend must listen on loopback, not %s", [input.metadata.name, addr])
}

# The grace period covers the proxy's drain followed by the backend's.
deny contains msg if {
	input.kind == "Deployment"
	some c in long_running
	not c.lifecycle.preStop
	msg := sprintf("Deployment/%s: container %q has no preStop drain", [input.metadata.name, c.name])
}

deny contains msg if {
	input.kind == "Deployment"
	sleeps := sum([s | some c in long_running; s := object.get(c, ["lifecycle", "preStop", "sleep", "seconds"], 0)])
	grace := object.get(pod_spec, "terminationGracePeriodSeconds", 30)
	grace < sleeps + 15
	msg := sprintf("Deployment/%s: terminationGracePeriodSeconds %d does not cover the preStop sleeps (%d s) plus both drains", [input.metadata.name, grace, sleeps])
}
