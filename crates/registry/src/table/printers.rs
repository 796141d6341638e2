//! Upstream's printers (`pkg/printers/internalversion/printers.go`), column for column, cell for
//! cell, as the apiserver prints them (`Wide: true`: every column, kubectl hides priority 1).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{
    access_modes, age, arr, b, bool_ptr, containers, count, format_label_selector, format_labels,
    i, int_or_string, list_with_more, parse_time, quantity, s, selector_string, since,
};
use super::{Column, Row};
use crate::openapi::field_doc;
use crate::resource::ResourceDef;

const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

fn c(name: &str, type_: &str, desc: impl Into<String>) -> Column {
    Column::new(name, type_, desc)
}

fn containers_cols() -> [Column; 2] {
    [
        c("Containers", "string", CONTAINERS_DOC).wide(),
        c("Images", "string", IMAGES_DOC).wide(),
    ]
}

/// Which printer a resource uses: `(group, kind)` of built-ins only.
fn printer_key(def: &ResourceDef) -> Option<(&str, &str)> {
    if def.custom {
        return None;
    }
    Some((def.group.as_str(), def.kind.as_str()))
}

/// The columns of a kind with an upstream printer.
pub(crate) fn columns(def: &ResourceDef) -> Option<Vec<Column>> {
    let key = printer_key(def)?;
    let name = Column::name;
    let age = Column::age;
    let cols = match key {
        ("", "Pod") => vec![
            name(),
            c(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            c(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            c(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age(),
            c("IP", "string", field_doc("PodStatus", "podIP")).wide(),
            c("Node", "string", field_doc("PodSpec", "nodeName")).wide(),
            c(
                "Nominated Node",
                "string",
                field_doc("PodStatus", "nominatedNodeName"),
            )
            .wide(),
            c(
                "Readiness Gates",
                "string",
                field_doc("PodSpec", "readinessGates"),
            )
            .wide(),
        ],
        ("", "PodTemplate") => vec![
            name(),
            c("Containers", "string", CONTAINERS_DOC),
            c("Images", "string", IMAGES_DOC),
            c("Pod Labels", "string", "The labels for the pod template."),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            name(),
            c(
                "Min Available",
                "string",
                "The minimum number of pods that must be available.",
            ),
            c(
                "Max Unavailable",
                "string",
                "The maximum number of pods that may be unavailable.",
            ),
            c(
                "Allowed Disruptions",
                "integer",
                "Calculated number of pods that may be disrupted at this time.",
            ),
            age(),
        ],
        ("", "ReplicationController") => {
            let [cs, is] = containers_cols();
            vec![
                name(),
                c(
                    "Desired",
                    "integer",
                    field_doc("ReplicationControllerSpec", "replicas"),
                ),
                c(
                    "Current",
                    "integer",
                    field_doc("ReplicationControllerStatus", "replicas"),
                ),
                c(
                    "Ready",
                    "integer",
                    field_doc("ReplicationControllerStatus", "readyReplicas"),
                ),
                age(),
                cs,
                is,
                c(
                    "Selector",
                    "string",
                    field_doc("ReplicationControllerSpec", "selector"),
                )
                .wide(),
            ]
        }
        ("apps", "ReplicaSet") => {
            let [cs, is] = containers_cols();
            vec![
                name(),
                c(
                    "Desired",
                    "integer",
                    field_doc("ReplicaSetSpec", "replicas"),
                ),
                c(
                    "Current",
                    "integer",
                    field_doc("ReplicaSetStatus", "replicas"),
                ),
                c(
                    "Ready",
                    "integer",
                    field_doc("ReplicaSetStatus", "readyReplicas"),
                ),
                age(),
                cs,
                is,
                c(
                    "Selector",
                    "string",
                    field_doc("ReplicaSetSpec", "selector"),
                )
                .wide(),
            ]
        }
        ("apps", "DaemonSet") => {
            let [cs, is] = containers_cols();
            vec![
                name(),
                c(
                    "Desired",
                    "integer",
                    field_doc("DaemonSetStatus", "desiredNumberScheduled"),
                ),
                c(
                    "Current",
                    "integer",
                    field_doc("DaemonSetStatus", "currentNumberScheduled"),
                ),
                c(
                    "Ready",
                    "integer",
                    field_doc("DaemonSetStatus", "numberReady"),
                ),
                c(
                    "Up-to-date",
                    "integer",
                    field_doc("DaemonSetStatus", "updatedNumberScheduled"),
                ),
                c(
                    "Available",
                    "integer",
                    field_doc("DaemonSetStatus", "numberAvailable"),
                ),
                c(
                    "Node Selector",
                    "string",
                    field_doc("PodSpec", "nodeSelector"),
                ),
                age(),
                cs,
                is,
                c("Selector", "string", field_doc("DaemonSetSpec", "selector")).wide(),
            ]
        }
        ("batch", "Job") => {
            let [cs, is] = containers_cols();
            vec![
                name(),
                c("Status", "string", "Status of the job."),
                c("Completions", "string", field_doc("JobStatus", "succeeded")),
                c("Duration", "string", "Time required to complete the job."),
                age(),
                cs,
                is,
                c("Selector", "string", field_doc("JobSpec", "selector")).wide(),
            ]
        }
        ("batch", "CronJob") => {
            let [cs, is] = containers_cols();
            vec![
                name(),
                c("Schedule", "string", field_doc("CronJobSpec", "schedule")),
                c("Timezone", "string", field_doc("CronJobSpec", "timeZone")),
                c("Suspend", "boolean", field_doc("CronJobSpec", "suspend")),
                c("Active", "integer", field_doc("CronJobStatus", "active")),
                c(
                    "Last Schedule",
                    "string",
                    field_doc("CronJobStatus", "lastScheduleTime"),
                ),
                age(),
                cs,
                is,
                c("Selector", "string", field_doc("JobSpec", "selector")).wide(),
            ]
        }
        ("", "Service") => vec![
            name(),
            c("Type", "string", field_doc("ServiceSpec", "type")),
            c(
                "Cluster-IP",
                "string",
                field_doc("ServiceSpec", "clusterIP"),
            ),
            c(
                "External-IP",
                "string",
                field_doc("ServiceSpec", "externalIPs"),
            ),
            c("Port(s)", "string", field_doc("ServiceSpec", "ports")),
            age(),
            c("Selector", "string", field_doc("ServiceSpec", "selector")).wide(),
        ],
        ("networking.k8s.io", "Ingress") => vec![
            name(),
            c(
                "Class",
                "string",
                "The name of the IngressClass resource that should be used for additional configuration",
            ),
            c(
                "Hosts",
                "string",
                "Hosts that incoming requests are matched against before the ingress rule",
            ),
            c(
                "Address",
                "string",
                "Address is a list containing ingress points for the load-balancer",
            ),
            c("Ports", "string", "Ports of TLS configurations that open"),
            age(),
        ],
        ("networking.k8s.io", "IngressClass") => vec![
            name(),
            c(
                "Controller",
                "string",
                "Controller that is responsible for handling this class",
            ),
            c(
                "Parameters",
                "string",
                "A reference to a resource with additional parameters",
            ),
            age(),
        ],
        ("apps", "StatefulSet") => {
            let [cs, is] = containers_cols();
            vec![
                name(),
                c("Ready", "string", "Number of the pod with ready state"),
                age(),
                cs,
                is,
            ]
        }
        ("", "Endpoints") => vec![
            name(),
            c("Endpoints", "string", field_doc("Endpoints", "subsets")),
            age(),
        ],
        ("", "Node") => vec![
            name(),
            c("Status", "string", "The status of the node"),
            c("Roles", "string", "The roles of the node"),
            age(),
            c(
                "Version",
                "string",
                field_doc("NodeSystemInfo", "kubeletVersion"),
            ),
            c(
                "Internal-IP",
                "string",
                field_doc("NodeStatus", "addresses"),
            )
            .wide(),
            c(
                "External-IP",
                "string",
                field_doc("NodeStatus", "addresses"),
            )
            .wide(),
            c("OS-Image", "string", field_doc("NodeSystemInfo", "osImage")).wide(),
            c(
                "Kernel-Version",
                "string",
                field_doc("NodeSystemInfo", "kernelVersion"),
            )
            .wide(),
            c(
                "Container-Runtime",
                "string",
                field_doc("NodeSystemInfo", "containerRuntimeVersion"),
            )
            .wide(),
        ],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            c("Last Seen", "string", event_doc("lastTimestamp")),
            c("Type", "string", event_doc("type")),
            c("Reason", "string", event_doc("reason")),
            c("Object", "string", event_doc("involvedObject")),
            c(
                "Subobject",
                "string",
                field_doc("ObjectReference", "fieldPath"),
            )
            .wide(),
            c("Source", "string", event_doc("source")).wide(),
            c("Message", "string", event_doc("message")),
            c("First Seen", "string", event_doc("firstTimestamp")).wide(),
            c("Count", "string", event_doc("count")).wide(),
            Column::name().wide(),
        ],
        ("", "Namespace") => vec![
            name(),
            c("Status", "string", "The status of the namespace"),
            age(),
        ],
        ("", "Secret") => vec![
            name(),
            c("Type", "string", field_doc("Secret", "type")),
            c("Data", "string", field_doc("Secret", "data")),
            age(),
        ],
        ("", "ServiceAccount") => vec![
            name(),
            c("Secrets", "string", field_doc("ServiceAccount", "secrets")),
            age(),
        ],
        ("", "PersistentVolume") => vec![
            name(),
            c(
                "Capacity",
                "string",
                field_doc("PersistentVolumeSpec", "capacity"),
            ),
            c(
                "Access Modes",
                "string",
                field_doc("PersistentVolumeSpec", "accessModes"),
            ),
            c(
                "Reclaim Policy",
                "string",
                field_doc("PersistentVolumeSpec", "persistentVolumeReclaimPolicy"),
            ),
            c(
                "Status",
                "string",
                field_doc("PersistentVolumeStatus", "phase"),
            ),
            c(
                "Claim",
                "string",
                field_doc("PersistentVolumeSpec", "claimRef"),
            ),
            c("StorageClass", "string", "StorageClass of the pv"),
            c(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pv",
            ),
            c(
                "Reason",
                "string",
                field_doc("PersistentVolumeStatus", "reason"),
            ),
            age(),
            c(
                "VolumeMode",
                "string",
                field_doc("PersistentVolumeSpec", "volumeMode"),
            )
            .wide(),
        ],
        ("", "PersistentVolumeClaim") => vec![
            name(),
            c(
                "Status",
                "string",
                field_doc("PersistentVolumeClaimStatus", "phase"),
            ),
            c(
                "Volume",
                "string",
                field_doc("PersistentVolumeClaimSpec", "volumeName"),
            ),
            c(
                "Capacity",
                "string",
                field_doc("PersistentVolumeClaimStatus", "capacity"),
            ),
            c(
                "Access Modes",
                "string",
                field_doc("PersistentVolumeClaimStatus", "accessModes"),
            ),
            c("StorageClass", "string", "StorageClass of the pvc"),
            c(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pvc",
            ),
            age(),
            c(
                "VolumeMode",
                "string",
                field_doc("PersistentVolumeClaimSpec", "volumeMode"),
            )
            .wide(),
        ],
        ("", "ComponentStatus") => vec![
            name(),
            c("Status", "string", "Status of the component conditions"),
            c("Message", "string", "Message of the component conditions"),
            c("Error", "string", "Error of the component conditions"),
        ],
        ("apps", "Deployment") => {
            let [cs, is] = containers_cols();
            vec![
                name(),
                c("Ready", "string", "Number of the pod with ready state"),
                c(
                    "Up-to-date",
                    "string",
                    field_doc("DeploymentStatus", "updatedReplicas"),
                ),
                c(
                    "Available",
                    "string",
                    field_doc("DeploymentStatus", "availableReplicas"),
                ),
                age(),
                cs,
                is,
                c(
                    "Selector",
                    "string",
                    field_doc("DeploymentSpec", "selector"),
                )
                .wide(),
            ]
        }
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            name(),
            c(
                "Reference",
                "string",
                field_doc("HorizontalPodAutoscalerSpec", "scaleTargetRef"),
            ),
            c(
                "Targets",
                "string",
                field_doc("HorizontalPodAutoscalerSpec", "metrics"),
            ),
            c(
                "MinPods",
                "string",
                field_doc("HorizontalPodAutoscalerSpec", "minReplicas"),
            ),
            c(
                "MaxPods",
                "string",
                field_doc("HorizontalPodAutoscalerSpec", "maxReplicas"),
            ),
            c(
                "Replicas",
                "string",
                field_doc("HorizontalPodAutoscalerStatus", "currentReplicas"),
            ),
            age(),
        ],
        ("", "ConfigMap") => vec![
            name(),
            c("Data", "string", field_doc("ConfigMap", "data")),
            age(),
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            name(),
            c(
                "Pod-Selector",
                "string",
                field_doc("NetworkPolicySpec", "podSelector"),
            ),
            age(),
        ],
        ("rbac.authorization.k8s.io", "RoleBinding") => vec![
            name(),
            c("Role", "string", field_doc("RoleBinding", "roleRef")),
            age(),
            c("Users", "string", "Users in the roleBinding").wide(),
            c("Groups", "string", "Groups in the roleBinding").wide(),
            c(
                "ServiceAccounts",
                "string",
                "ServiceAccounts in the roleBinding",
            )
            .wide(),
        ],
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => vec![
            name(),
            c("Role", "string", field_doc("ClusterRoleBinding", "roleRef")),
            age(),
            c("Users", "string", "Users in the clusterRoleBinding").wide(),
            c("Groups", "string", "Groups in the clusterRoleBinding").wide(),
            c(
                "ServiceAccounts",
                "string",
                "ServiceAccounts in the clusterRoleBinding",
            )
            .wide(),
        ],
        ("certificates.k8s.io", "CertificateSigningRequest") => vec![
            name(),
            age(),
            c(
                "SignerName",
                "string",
                field_doc("CertificateSigningRequestSpec", "signerName"),
            ),
            c(
                "Requestor",
                "string",
                field_doc("CertificateSigningRequestSpec", "request"),
            ),
            c(
                "RequestedDuration",
                "string",
                field_doc("CertificateSigningRequestSpec", "expirationSeconds"),
            ),
            c(
                "Condition",
                "string",
                field_doc("CertificateSigningRequestStatus", "conditions"),
            ),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            name(),
            c("Holder", "string", field_doc("LeaseSpec", "holderIdentity")),
            age(),
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            name(),
            c(
                "Provisioner",
                "string",
                field_doc("StorageClass", "provisioner"),
            ),
            c(
                "ReclaimPolicy",
                "string",
                field_doc("StorageClass", "reclaimPolicy"),
            ),
            c(
                "VolumeBindingMode",
                "string",
                field_doc("StorageClass", "volumeBindingMode"),
            ),
            c(
                "AllowVolumeExpansion",
                "string",
                field_doc("StorageClass", "allowVolumeExpansion"),
            ),
            age(),
        ],
        ("apps", "ControllerRevision") => vec![
            name(),
            c("Controller", "string", "Controller of the object"),
            c(
                "Revision",
                "string",
                field_doc("ControllerRevision", "revision"),
            ),
            age(),
        ],
        ("", "ResourceQuota") => vec![
            name(),
            c(
                "Request",
                "string",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ),
            c(
                "Limit",
                "string",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
            age(),
        ],
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name(),
            c("Value", "integer", field_doc("PriorityClass", "value")),
            c(
                "Global-Default",
                "boolean",
                field_doc("PriorityClass", "globalDefault"),
            ),
            age(),
            c(
                "PreemptionPolicy",
                "string",
                field_doc("PriorityClass", "preemptionPolicy"),
            ),
        ],
        ("node.k8s.io", "RuntimeClass") => vec![
            name(),
            c("Handler", "string", field_doc("RuntimeClass", "handler")),
            age(),
        ],
        ("storage.k8s.io", "VolumeAttachment") => vec![
            name(),
            c(
                "Attacher",
                "string",
                field_doc("VolumeAttachmentSpec", "attacher"),
            )
            .with_format("name"),
            c(
                "PV",
                "string",
                field_doc("VolumeAttachmentSource", "persistentVolumeName"),
            ),
            c(
                "Node",
                "string",
                field_doc("VolumeAttachmentSpec", "nodeName"),
            ),
            c(
                "Attached",
                "boolean",
                field_doc("VolumeAttachmentStatus", "attached"),
            ),
            age(),
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            name(),
            c(
                "AddressType",
                "string",
                field_doc("EndpointSlice", "addressType"),
            ),
            c("Ports", "string", field_doc("EndpointSlice", "ports")),
            c(
                "Endpoints",
                "string",
                field_doc("EndpointSlice", "endpoints"),
            ),
            age(),
        ],
        ("storage.k8s.io", "CSINode") => vec![
            name(),
            c(
                "Drivers",
                "integer",
                "Drivers indicates the number of CSI drivers registered on the node",
            ),
            age(),
        ],
        ("storage.k8s.io", "CSIDriver") => vec![
            name(),
            c(
                "AttachRequired",
                "boolean",
                field_doc("CSIDriverSpec", "attachRequired"),
            ),
            c(
                "PodInfoOnMount",
                "boolean",
                field_doc("CSIDriverSpec", "podInfoOnMount"),
            ),
            c(
                "StorageCapacity",
                "boolean",
                field_doc("CSIDriverSpec", "storageCapacity"),
            ),
            c(
                "TokenRequests",
                "string",
                field_doc("CSIDriverSpec", "tokenRequests"),
            ),
            c(
                "RequiresRepublish",
                "boolean",
                field_doc("CSIDriverSpec", "requiresRepublish"),
            ),
            c(
                "Modes",
                "string",
                field_doc("CSIDriverSpec", "volumeLifecycleModes"),
            ),
            age(),
        ],
        ("storage.k8s.io", "CSIStorageCapacity") => vec![
            name(),
            c(
                "StorageClassName",
                "string",
                field_doc("CSIStorageCapacity", "storageClassName"),
            ),
            c(
                "Capacity",
                "string",
                field_doc("CSIStorageCapacity", "capacity"),
            ),
        ],
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
        | ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => vec![
            name(),
            c(
                "Webhooks",
                "integer",
                "Webhooks indicates the number of webhooks registered in this configuration",
            ),
            age(),
        ],
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => vec![
            name(),
            c(
                "Validations",
                "integer",
                "Validations indicates the number of validation rules defined in this configuration",
            ),
            c(
                "ParamKind",
                "string",
                "ParamKind specifies the kind of resources used to parameterize this policy",
            ),
            age(),
        ],
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => vec![
            name(),
            c(
                "PolicyName",
                "string",
                "PolicyName indicates the policy definition which the policy binding binded to",
            ),
            c(
                "ParamRef",
                "string",
                "ParamRef indicates the param resource which sets the configration param",
            ),
            age(),
        ],
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => vec![
            name(),
            c(
                "PriorityLevel",
                "string",
                field_doc("PriorityLevelConfigurationReference", "name"),
            ),
            c(
                "MatchingPrecedence",
                "string",
                field_doc("FlowSchemaSpec", "matchingPrecedence"),
            ),
            c(
                "DistinguisherMethod",
                "string",
                field_doc("FlowSchemaSpec", "distinguisherMethod"),
            ),
            age(),
            c(
                "MissingPL",
                "string",
                "references a broken or non-existent PriorityLevelConfiguration",
            ),
        ],
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => vec![
            name(),
            c(
                "Type",
                "string",
                field_doc("PriorityLevelConfigurationSpec", "type"),
            ),
            c(
                "NominalConcurrencyShares",
                "string",
                field_doc(
                    "LimitedPriorityLevelConfiguration",
                    "nominalConcurrencyShares",
                ),
            ),
            c(
                "Queues",
                "string",
                field_doc("QueuingConfiguration", "queues"),
            ),
            c(
                "HandSize",
                "string",
                field_doc("QueuingConfiguration", "handSize"),
            ),
            c(
                "QueueLengthLimit",
                "string",
                field_doc("QueuingConfiguration", "queueLengthLimit"),
            ),
            age(),
        ],
        ("networking.k8s.io", "ServiceCIDR") => vec![
            name(),
            c("CIDRs", "string", field_doc("ServiceCIDRSpec", "cidrs")),
            age(),
        ],
        ("networking.k8s.io", "IPAddress") => vec![
            name(),
            c(
                "ParentRef",
                "string",
                field_doc("IPAddressSpec", "parentRef"),
            ),
        ],
        ("autoscaling", "Scale") => vec![
            Column::new("Name", "string", field_doc("ObjectMeta", "name")),
            c("Desired", "integer", field_doc("ScaleSpec", "replicas")),
            c("Available", "integer", field_doc("ScaleStatus", "replicas")),
            age(),
        ],
        _ => return None,
    };
    Some(cols)
}

fn event_doc(field: &str) -> String {
    crate::openapi::schemas::builtin()
        .defs
        .get("io.k8s.api.core.v1.Event")
        .and_then(|s| s.pointer(&format!("/properties/{field}/description")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The row of a kind with an upstream printer.
pub(crate) fn row(def: &ResourceDef, o: &Value, now: Timestamp) -> Option<Row> {
    let key = printer_key(def)?;
    let name = json!(s(o, "/metadata/name"));
    let age = || json!(age(o, now));
    let cells = match key {
        ("", "Pod") => return Some(pod_row(o, now)),
        ("", "PodTemplate") => {
            let (names, images) = containers(arr(o, "/template/spec/containers"));
            vec![
                name,
                json!(names),
                json!(images),
                json!(format_labels(o.pointer("/template/metadata/labels"))),
            ]
        }
        ("policy", "PodDisruptionBudget") => {
            let min = o
                .pointer("/spec/minAvailable")
                .map(int_or_string)
                .unwrap_or_else(|| "N/A".into());
            let max = o
                .pointer("/spec/maxUnavailable")
                .map(int_or_string)
                .unwrap_or_else(|| "N/A".into());
            vec![
                name,
                json!(min),
                json!(max),
                json!(i(o, "/status/disruptionsAllowed")),
                age(),
            ]
        }
        ("", "ReplicationController") => {
            let (names, images) = containers(arr(o, "/spec/template/spec/containers"));
            vec![
                name,
                json!(i(o, "/spec/replicas")),
                json!(i(o, "/status/replicas")),
                json!(i(o, "/status/readyReplicas")),
                age(),
                json!(names),
                json!(images),
                json!(format_labels(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (names, images) = containers(arr(o, "/spec/template/spec/containers"));
            vec![
                name,
                json!(i(o, "/spec/replicas")),
                json!(i(o, "/status/replicas")),
                json!(i(o, "/status/readyReplicas")),
                age(),
                json!(names),
                json!(images),
                json!(format_label_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "DaemonSet") => {
            let (names, images) = containers(arr(o, "/spec/template/spec/containers"));
            vec![
                name,
                json!(i(o, "/status/desiredNumberScheduled")),
                json!(i(o, "/status/currentNumberScheduled")),
                json!(i(o, "/status/numberReady")),
                json!(i(o, "/status/updatedNumberScheduled")),
                json!(i(o, "/status/numberAvailable")),
                json!(format_labels(o.pointer("/spec/template/spec/nodeSelector"))),
                age(),
                json!(names),
                json!(images),
                json!(format_label_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("batch", "Job") => {
            let succeeded = i(o, "/status/succeeded");
            let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(c) => format!("{succeeded}/{c}"),
                None => {
                    let parallelism = i(o, "/spec/parallelism");
                    if parallelism > 1 {
                        format!("{succeeded}/1 of {parallelism}")
                    } else {
                        format!("{succeeded}/1")
                    }
                }
            };
            let start = parse_time(o.pointer("/status/startTime"));
            let done = parse_time(o.pointer("/status/completionTime"));
            let duration = match (start, done) {
                (None, _) => String::new(),
                (Some(st), None) => super::format::between(st, now),
                (Some(st), Some(end)) => super::format::between(st, end),
            };
            let conditions = arr(o, "/status/conditions");
            let has = |t: &str| {
                conditions
                    .iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
                    .is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if o.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else if has("Suspended") {
                "Suspended"
            } else if has("FailureTarget") {
                "FailureTarget"
            } else {
                "Running"
            };
            let (names, images) = containers(arr(o, "/spec/template/spec/containers"));
            vec![
                name,
                json!(status),
                json!(completions),
                json!(duration),
                age(),
                json!(names),
                json!(images),
                json!(format_label_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("batch", "CronJob") => {
            let last = match o.pointer("/status/lastScheduleTime") {
                Some(v) if !v.is_null() => since(Some(v), now),
                _ => "<none>".into(),
            };
            let tz = o
                .pointer("/spec/timeZone")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let (names, images) =
                containers(arr(o, "/spec/jobTemplate/spec/template/spec/containers"));
            vec![
                name,
                json!(s(o, "/spec/schedule")),
                json!(tz),
                json!(bool_ptr(o.pointer("/spec/suspend"))),
                json!(count(o, "/status/active")),
                json!(last),
                age(),
                json!(names),
                json!(images),
                json!(format_label_selector(
                    o.pointer("/spec/jobTemplate/spec/selector")
                )),
            ]
        }
        ("", "Service") => {
            let internal = arr(o, "/spec/clusterIPs")
                .first()
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let mut ports = make_port_string(arr(o, "/spec/ports"));
            if ports.is_empty() {
                ports = "<none>".into();
            }
            vec![
                name,
                json!(s(o, "/spec/type")),
                json!(internal),
                json!(service_external_ip(o)),
                json!(ports),
                age(),
                json!(format_labels(o.pointer("/spec/selector"))),
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let class = o
                .pointer("/spec/ingressClassName")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let ports = if arr(o, "/spec/tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                name,
                json!(class),
                json!(format_hosts(arr(o, "/spec/rules"))),
                json!(load_balancer_status(arr(o, "/status/loadBalancer/ingress"))),
                json!(ports),
                age(),
            ]
        }
        ("networking.k8s.io", "IngressClass") => {
            let parameters = match o.pointer("/spec/parameters") {
                Some(p) if p.is_object() => {
                    let mut out = s(p, "/kind").to_string();
                    if let Some(g) = p.get("apiGroup").and_then(Value::as_str) {
                        out = format!("{out}.{g}");
                    }
                    format!("{out}/{}", s(p, "/name"))
                }
                _ => "<none>".into(),
            };
            vec![
                name,
                json!(s(o, "/spec/controller")),
                json!(parameters),
                age(),
            ]
        }
        ("apps", "StatefulSet") => {
            let (names, images) = containers(arr(o, "/spec/template/spec/containers"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    i(o, "/spec/replicas")
                )),
                age(),
                json!(names),
                json!(images),
            ]
        }
        ("", "Endpoints") => vec![name, json!(format_endpoints(o)), age()],
        ("", "Node") => return Some(node_row(o, now)),
        ("", "Event") => return Some(event_row(&core_event(o), now)),
        ("events.k8s.io", "Event") => return Some(event_row(&events_v1_as_core(o), now)),
        ("", "Namespace") => vec![name, json!(s(o, "/status/phase")), age()],
        ("", "Secret") => vec![name, json!(s(o, "/type")), json!(count(o, "/data")), age()],
        ("", "ServiceAccount") => vec![name, json!(count(o, "/secrets")), age()],
        ("", "PersistentVolume") => {
            let claim = match o.pointer("/spec/claimRef") {
                Some(r) if r.is_object() => {
                    format!("{}/{}", s(r, "/namespace"), s(r, "/name"))
                }
                _ => String::new(),
            };
            let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating".to_string()
            } else {
                s(o, "/status/phase").to_string()
            };
            let class = o
                .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
                .and_then(Value::as_str)
                .unwrap_or_else(|| s(o, "/spec/storageClassName"));
            vec![
                name,
                json!(quantity(o.pointer("/spec/capacity/storage"))),
                json!(access_modes(arr(o, "/spec/accessModes"))),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(phase),
                json!(claim),
                json!(class),
                json!(
                    o.pointer("/spec/volumeAttributesClassName")
                        .and_then(Value::as_str)
                        .unwrap_or("<unset>")
                ),
                json!(s(o, "/status/reason")),
                age(),
                json!(
                    o.pointer("/spec/volumeMode")
                        .and_then(Value::as_str)
                        .unwrap_or("<unset>")
                ),
            ]
        }
        ("", "PersistentVolumeClaim") => {
            let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating".to_string()
            } else {
                s(o, "/status/phase").to_string()
            };
            let bound = !s(o, "/spec/volumeName").is_empty();
            let (capacity, modes) = if bound {
                (
                    quantity(o.pointer("/status/capacity/storage")),
                    access_modes(arr(o, "/status/accessModes")),
                )
            } else {
                (String::new(), String::new())
            };
            let class = o
                .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
                .and_then(Value::as_str)
                .unwrap_or_else(|| s(o, "/spec/storageClassName"));
            vec![
                name,
                json!(phase),
                json!(s(o, "/spec/volumeName")),
                json!(capacity),
                json!(modes),
                json!(class),
                json!(
                    o.pointer("/spec/volumeAttributesClassName")
                        .and_then(Value::as_str)
                        .unwrap_or("<unset>")
                ),
                age(),
                json!(
                    o.pointer("/spec/volumeMode")
                        .and_then(Value::as_str)
                        .unwrap_or("<unset>")
                ),
            ]
        }
        ("", "ComponentStatus") => {
            let mut status = "Unknown";
            let (mut message, mut error) = ("", "");
            for cond in arr(o, "/conditions") {
                if s(cond, "/type") == "Healthy" {
                    status = if s(cond, "/status") == "True" {
                        "Healthy"
                    } else {
                        "Unhealthy"
                    };
                    message = s(cond, "/message");
                    error = s(cond, "/error");
                    break;
                }
            }
            vec![name, json!(status), json!(message), json!(error)]
        }
        ("apps", "Deployment") => {
            let selector = match selector_string(o.pointer("/spec/selector")) {
                Ok(s) => s,
                Err(_) => "<invalid>".into(),
            };
            let (names, images) = containers(arr(o, "/spec/template/spec/containers"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    i(o, "/spec/replicas")
                )),
                json!(i(o, "/status/updatedReplicas")),
                json!(i(o, "/status/availableReplicas")),
                age(),
                json!(names),
                json!(images),
                json!(selector),
            ]
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let reference = format!(
                "{}/{}",
                s(o, "/spec/scaleTargetRef/kind"),
                s(o, "/spec/scaleTargetRef/name")
            );
            let min = o
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .map(|m| m.to_string())
                .unwrap_or_else(|| "<unset>".into());
            vec![
                name,
                json!(reference),
                json!(hpa_metrics(def, o)),
                json!(min),
                json!(i(o, "/spec/maxReplicas")),
                json!(i(o, "/status/currentReplicas")),
                age(),
            ]
        }
        ("", "ConfigMap") => vec![
            name,
            json!(count(o, "/data") + count(o, "/binaryData")),
            age(),
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            name,
            json!(format_label_selector(Some(
                o.pointer("/spec/podSelector").unwrap_or(&json!({}))
            ))),
            age(),
        ],
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            let role = format!("{}/{}", s(o, "/roleRef/kind"), s(o, "/roleRef/name"));
            let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
            for subj in arr(o, "/subjects") {
                match s(subj, "/kind") {
                    "User" => users.push(s(subj, "/name").to_string()),
                    "Group" => groups.push(s(subj, "/name").to_string()),
                    "ServiceAccount" => {
                        sas.push(format!("{}/{}", s(subj, "/namespace"), s(subj, "/name")))
                    }
                    _ => {}
                }
            }
            vec![
                name,
                json!(role),
                age(),
                json!(users.join(", ")),
                json!(groups.join(", ")),
                json!(sas.join(", ")),
            ]
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let signer = match s(o, "/spec/signerName") {
                "" => "<none>",
                x => x,
            };
            let requested = o
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(super::format::human_duration_seconds)
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                age(),
                json!(signer),
                json!(s(o, "/spec/username")),
                json!(requested),
                json!(csr_status(o)),
            ]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(o, "/spec/holderIdentity")), age()]
        }
        ("storage.k8s.io", "StorageClass") => {
            let is_default = |k: &str| {
                o.pointer(&format!("/metadata/annotations/{k}"))
                    .and_then(Value::as_str)
                    == Some("true")
            };
            let mut n = s(o, "/metadata/name").to_string();
            if is_default("storageclass.kubernetes.io~1is-default-class")
                || is_default("storageclass.beta.kubernetes.io~1is-default-class")
            {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(s(o, "/provisioner")),
                json!(
                    o.pointer("/reclaimPolicy")
                        .and_then(Value::as_str)
                        .unwrap_or("Delete")
                ),
                json!(
                    o.pointer("/volumeBindingMode")
                        .and_then(Value::as_str)
                        .unwrap_or("Immediate")
                ),
                json!(b(o, "/allowVolumeExpansion")),
                age(),
            ]
        }
        ("apps", "ControllerRevision") => {
            let controller = arr(o, "/metadata/ownerReferences")
                .iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .map(|r| {
                    let api_version = s(r, "/apiVersion");
                    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                    let kind = s(r, "/kind");
                    let gk = if group.is_empty() {
                        kind.to_string()
                    } else {
                        format!("{kind}.{group}")
                    };
                    if gk.is_empty() {
                        s(r, "/name").to_string()
                    } else {
                        format!("{}/{}", gk.to_lowercase(), s(r, "/name"))
                    }
                })
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(controller), json!(i(o, "/revision")), age()]
        }
        ("", "ResourceQuota") => {
            let mut resources: Vec<&String> = o
                .pointer("/status/hard")
                .and_then(Value::as_object)
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            resources.sort();
            let (mut request, mut limit) = (String::new(), String::new());
            for r in resources {
                let used = quantity(o.pointer(&format!("/status/used/{}", escape(r))));
                let hard = quantity(o.pointer(&format!("/status/hard/{}", escape(r))));
                let text = format!("{r}: {used}/{hard}, ");
                if r.split('.').next() == Some("limits") && r.contains('.') {
                    limit.push_str(&text);
                } else {
                    request.push_str(&text);
                }
            }
            vec![
                name,
                json!(request.trim_end_matches(", ")),
                json!(limit.trim_end_matches(", ")),
                age(),
            ]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            json!(i(o, "/value")),
            json!(b(o, "/globalDefault")),
            age(),
            json!(s(o, "/preemptionPolicy")),
        ],
        ("node.k8s.io", "RuntimeClass") => vec![name, json!(s(o, "/handler")), age()],
        ("storage.k8s.io", "VolumeAttachment") => vec![
            name,
            json!(s(o, "/spec/attacher")),
            json!(s(o, "/spec/source/persistentVolumeName")),
            json!(s(o, "/spec/nodeName")),
            json!(b(o, "/status/attached")),
            age(),
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            name,
            json!(s(o, "/addressType")),
            json!(format_discovery_ports(arr(o, "/ports"))),
            json!(format_discovery_endpoints(arr(o, "/endpoints"))),
            age(),
        ],
        ("storage.k8s.io", "CSINode") => vec![name, json!(count(o, "/spec/drivers")), age()],
        ("storage.k8s.io", "CSIDriver") => {
            let modes: Vec<&str> = arr(o, "/spec/volumeLifecycleModes")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let modes = if modes.is_empty() {
                "<none>".to_string()
            } else {
                modes.join(",")
            };
            let tokens = match o.pointer("/spec/tokenRequests").and_then(Value::as_array) {
                Some(t) => t
                    .iter()
                    .map(|r| s(r, "/audience"))
                    .collect::<Vec<_>>()
                    .join(","),
                None => "<unset>".into(),
            };
            vec![
                name,
                json!(
                    o.pointer("/spec/attachRequired")
                        .and_then(Value::as_bool)
                        .unwrap_or(true)
                ),
                json!(b(o, "/spec/podInfoOnMount")),
                json!(b(o, "/spec/storageCapacity")),
                json!(tokens),
                json!(b(o, "/spec/requiresRepublish")),
                json!(modes),
                age(),
            ]
        }
        ("storage.k8s.io", "CSIStorageCapacity") => {
            let capacity = match o.get("capacity") {
                Some(v) if !v.is_null() => quantity(Some(v)),
                _ => "<unset>".into(),
            };
            vec![name, json!(s(o, "/storageClassName")), json!(capacity)]
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
        | ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            vec![name, json!(count(o, "/webhooks")), age()]
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            let param_kind = match o.pointer("/spec/paramKind") {
                Some(p) if p.is_object() => {
                    format!("{}/{}", s(p, "/apiVersion"), s(p, "/kind"))
                }
                _ => "<unset>".into(),
            };
            vec![
                name,
                json!(count(o, "/spec/validations")),
                json!(param_kind),
                age(),
            ]
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            let param = match o.pointer("/spec/paramRef") {
                Some(p) if p.is_object() => {
                    let n = s(p, "/name");
                    if !n.is_empty() {
                        match s(p, "/namespace") {
                            "" => format!("*/{n}"),
                            ns => format!("{ns}/{n}"),
                        }
                    } else if let Some(sel) = p.get("selector") {
                        selector_string(Some(sel)).unwrap_or_default()
                    } else {
                        "<unset>".into()
                    }
                }
                _ => "<unset>".into(),
            };
            vec![name, json!(s(o, "/spec/policyName")), json!(param), age()]
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => {
            let method = o
                .pointer("/spec/distinguisherMethod/type")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let bad = arr(o, "/status/conditions")
                .iter()
                .find(|c| s(c, "/type") == "Dangling")
                .map(|c| s(c, "/status").to_string())
                .unwrap_or_else(|| "?".into());
            vec![
                name,
                json!(s(o, "/spec/priorityLevelConfiguration/name")),
                json!(i(o, "/spec/matchingPrecedence")),
                json!(method),
                age(),
                json!(bad),
            ]
        }
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            let none = || json!("<none>");
            let (mut ncs, mut queues, mut hand, mut qll) = (none(), none(), none(), none());
            if let Some(l) = o.pointer("/spec/limited").filter(|v| v.is_object()) {
                ncs = json!(i(l, "/nominalConcurrencyShares"));
                if let Some(q) = l
                    .pointer("/limitResponse/queuing")
                    .filter(|v| v.is_object())
                {
                    queues = json!(i(q, "/queues"));
                    hand = json!(i(q, "/handSize"));
                    qll = json!(i(q, "/queueLengthLimit"));
                }
            }
            vec![
                name,
                json!(s(o, "/spec/type")),
                ncs,
                queues,
                hand,
                qll,
                age(),
            ]
        }
        ("networking.k8s.io", "ServiceCIDR") => {
            let cidrs: Vec<&str> = arr(o, "/spec/cidrs")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            vec![name, json!(cidrs.join(",")), age()]
        }
        ("networking.k8s.io", "IPAddress") => {
            let parent = match o.pointer("/spec/parentRef") {
                Some(p) if p.is_object() => {
                    let group = s(p, "/group");
                    let resource = s(p, "/resource");
                    let mut out = if group.is_empty() {
                        resource.to_lowercase()
                    } else {
                        format!("{resource}.{group}").to_lowercase()
                    };
                    if !s(p, "/namespace").is_empty() {
                        out = format!("{out}/{}", s(p, "/namespace"));
                    }
                    format!("{out}/{}", s(p, "/name"))
                }
                _ => "<none>".into(),
            };
            vec![name, json!(parent)]
        }
        ("autoscaling", "Scale") => vec![
            name,
            json!(i(o, "/spec/replicas")),
            json!(i(o, "/status/replicas")),
            age(),
        ],
        _ => return None,
    };
    Some(Row::new(cells))
}

/// Escapes a JSON pointer segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| s(c, "/type") == type_ && s(c, "/status") == "True")
}

fn is_restartable_init(init: &[Value], name: &str) -> bool {
    init.iter()
        .find(|c| s(c, "/name") == name)
        .is_some_and(|c| s(c, "/restartPolicy") == "Always")
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y > x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// `printPod`.
fn pod_row(pod: &Value, now: Timestamp) -> Row {
    let init_specs = arr(pod, "/spec/initContainers");
    let mut total = arr(pod, "/spec/containers").len() as i64;
    let mut ready = 0i64;
    let mut restarts = 0i64;
    let mut restartable_init_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;
    let phase = s(pod, "/status/phase");
    let mut reason = match s(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    let conditions = arr(pod, "/status/conditions");
    for c in conditions {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }
    let mut row_conditions = Vec::new();
    match phase {
        "Succeeded" => row_conditions.push(json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."})),
        "Failed" => row_conditions.push(json!({"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."})),
        _ => {}
    }
    for c in init_specs {
        if s(c, "/restartPolicy") == "Always" {
            total += 1;
        }
    }
    let mut initializing = false;
    for (idx, st) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        let name = s(st, "/name");
        let restartable = is_restartable_init(init_specs, name);
        restarts += i(st, "/restartCount");
        let finished = parse_time(st.pointer("/lastState/terminated/finishedAt"));
        if st
            .pointer("/lastState/terminated")
            .is_some_and(Value::is_object)
        {
            last_restart = later(last_restart, finished);
        }
        if restartable {
            restartable_init_restarts += i(st, "/restartCount");
            if st
                .pointer("/lastState/terminated")
                .is_some_and(Value::is_object)
            {
                last_restartable_init_restart = later(last_restartable_init_restart, finished);
            }
        }
        let terminated = st.pointer("/state/terminated").filter(|v| v.is_object());
        let waiting = st.pointer("/state/waiting").filter(|v| v.is_object());
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        if restartable && b(st, "/started") {
            if b(st, "/ready") {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = match s(t, "/reason") {
                "" if i(t, "/signal") != 0 => format!("Init:Signal:{}", i(t, "/signal")),
                "" => format!("Init:ExitCode:{}", i(t, "/exitCode")),
                r => format!("Init:{r}"),
            };
        } else if let Some(w) = waiting.filter(|w| {
            let r = s(w, "/reason");
            !r.is_empty() && r != "PodInitializing"
        }) {
            reason = format!("Init:{}", s(w, "/reason"));
        } else {
            reason = format!("Init:{idx}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    if !initializing || condition_true_or_false(conditions, "Initialized") {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for st in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += i(st, "/restartCount");
            if st
                .pointer("/lastState/terminated")
                .is_some_and(Value::is_object)
            {
                last_restart = later(
                    last_restart,
                    parse_time(st.pointer("/lastState/terminated/finishedAt")),
                );
            }
            let waiting_reason = s(st, "/state/waiting/reason");
            let terminated = st.pointer("/state/terminated").filter(|v| v.is_object());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = match s(t, "/reason") {
                    "" if i(t, "/signal") != 0 => format!("Signal:{}", i(t, "/signal")),
                    "" => format!("ExitCode:{}", i(t, "/exitCode")),
                    r => r.to_string(),
                };
            } else if b(st, "/ready") && st.pointer("/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".into();
    }
    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", super::format::between(t, now))
        }
        _ => restarts.to_string(),
    };
    let pod_ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| s(p, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let node = match s(pod, "/spec/nodeName") {
        "" => "<none>",
        n => n,
    };
    let nominated = match s(pod, "/status/nominatedNodeName") {
        "" => "<none>",
        n => n,
    };
    let gates = arr(pod, "/spec/readinessGates");
    let readiness = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let t = s(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| s(c, "/type") == t)
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    Row {
        cells: vec![
            json!(s(pod, "/metadata/name")),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_str),
            json!(age(pod, now)),
            json!(pod_ip),
            json!(node),
            json!(nominated),
            json!(readiness),
        ],
        conditions: row_conditions,
    }
}

/// `isPodInitializedConditionTrue`: the first `Initialized` condition's status.
fn condition_true_or_false(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .find(|c| s(c, "/type") == type_)
        .is_some_and(|c| s(c, "/status") == "True")
}

/// `printNode`.
fn node_row(node: &Value, now: Timestamp) -> Row {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = arr(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| s(c, "/type") == "Ready")
    {
        status.push(if s(c, "/status") == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if b(node, "/spec/unschedulable") {
        status.push("SchedulingDisabled".into());
    }
    let mut roles = std::collections::BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(v.to_string());
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |t: &str| {
        arr(node, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == t)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let unknown = |p: &str| match s(node, p) {
        "" => "<unknown>".to_string(),
        x => x.to_string(),
    };
    Row::new(vec![
        json!(s(node, "/metadata/name")),
        json!(status.join(",")),
        json!(roles),
        json!(age(node, now)),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(unknown("/status/nodeInfo/osImage")),
        json!(unknown("/status/nodeInfo/kernelVersion")),
        json!(unknown("/status/nodeInfo/containerRuntimeVersion")),
    ])
}

/// The internal Event fields the printer reads.
struct EventView<'a> {
    name: &'a str,
    first: Option<&'a Value>,
    last: Option<&'a Value>,
    event_time: Option<&'a Value>,
    series: Option<&'a Value>,
    count: i64,
    kind: &'a str,
    object_name: &'a str,
    field_path: &'a str,
    type_: &'a str,
    reason: &'a str,
    component: &'a str,
    host: &'a str,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
    message: &'a str,
}

fn set(v: Option<&Value>) -> Option<&Value> {
    v.filter(|x| !x.is_null() && x.as_str() != Some(""))
}

fn core_event(o: &Value) -> EventView<'_> {
    EventView {
        name: s(o, "/metadata/name"),
        first: set(o.get("firstTimestamp")),
        last: set(o.get("lastTimestamp")),
        event_time: set(o.get("eventTime")),
        series: o.get("series").filter(|v| v.is_object()),
        count: i(o, "/count"),
        kind: s(o, "/involvedObject/kind"),
        object_name: s(o, "/involvedObject/name"),
        field_path: s(o, "/involvedObject/fieldPath"),
        type_: s(o, "/type"),
        reason: s(o, "/reason"),
        component: s(o, "/source/component"),
        host: s(o, "/source/host"),
        reporting_controller: s(o, "/reportingComponent"),
        reporting_instance: s(o, "/reportingInstance"),
        message: s(o, "/message"),
    }
}

/// events.k8s.io/v1 fields as the internal (core) Event sees them.
fn events_v1_as_core(o: &Value) -> EventView<'_> {
    EventView {
        name: s(o, "/metadata/name"),
        first: set(o.get("deprecatedFirstTimestamp")),
        last: set(o.get("deprecatedLastTimestamp")),
        event_time: set(o.get("eventTime")),
        series: o.get("series").filter(|v| v.is_object()),
        count: i(o, "/deprecatedCount"),
        kind: s(o, "/regarding/kind"),
        object_name: s(o, "/regarding/name"),
        field_path: s(o, "/regarding/fieldPath"),
        type_: s(o, "/type"),
        reason: s(o, "/reason"),
        component: s(o, "/deprecatedSource/component"),
        host: s(o, "/deprecatedSource/host"),
        reporting_controller: s(o, "/reportingController"),
        reporting_instance: s(o, "/reportingInstance"),
        message: s(o, "/note"),
    }
}

/// `printEvent`.
fn event_row(e: &EventView<'_>, now: Timestamp) -> Row {
    let first = match e.first {
        Some(t) => since(Some(t), now),
        None => since(e.event_time, now),
    };
    let mut last = match e.last {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = e.count;
    if let Some(series) = e.series {
        last = since(series.get("lastObservedTime"), now);
        count = i(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let target = if e.object_name.is_empty() {
        e.kind.to_lowercase()
    } else {
        format!("{}/{}", e.kind.to_lowercase(), e.object_name)
    };
    let component = if e.component.is_empty() {
        e.reporting_controller
    } else {
        e.component
    };
    let host = if e.host.is_empty() {
        e.reporting_instance
    } else {
        e.host
    };
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    Row::new(vec![
        json!(last),
        json!(e.type_),
        json!(e.reason),
        json!(target),
        json!(e.field_path),
        json!(source),
        json!(e.message.trim()),
        json!(first),
        json!(count),
        json!(e.name),
    ])
}

/// `makePortString`.
fn make_port_string(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let port = i(p, "/port");
            let proto = s(p, "/protocol");
            let node_port = i(p, "/nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `loadBalancerStatusStringer` (wide: never clipped): sorted unique IPs or hostnames.
fn load_balancer_status(ingress: &[Value]) -> String {
    let mut set = std::collections::BTreeSet::new();
    for ing in ingress {
        let ip = s(ing, "/ip");
        let host = s(ing, "/hostname");
        if !ip.is_empty() {
            set.insert(ip.to_string());
        } else if !host.is_empty() {
            set.insert(host.to_string());
        }
    }
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// `getServiceExternalIP` with `wide`.
fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(svc, "/spec/type") {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_status(arr(svc, "/status/loadBalancer/ingress"));
            if !external.is_empty() {
                let mut results: Vec<String> = Vec::new();
                if !lb.is_empty() {
                    results.extend(lb.split(',').map(str::to_string));
                }
                results.extend(external.iter().map(|s| s.to_string()));
                return results.join(",");
            }
            if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

/// `formatHosts`.
fn format_hosts(rules: &[Value]) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == max {
            more = true;
        }
        let host = s(rule, "/host");
        if !more && !host.is_empty() {
            list.push(host.to_string());
        }
    }
    if list.is_empty() {
        return "*".into();
    }
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", rules.len().saturating_sub(max));
    }
    ret
}

/// `formatEndpoints` with all ports.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(s(a, "/ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                let ip = s(a, "/ip");
                let port = i(p, "/port");
                list.push(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count.saturating_sub(max));
    }
    ret
}

/// `formatDiscoveryPorts`.
fn format_discovery_ports(ports: &[Value]) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for p in ports {
        if list.len() < max {
            let num = match p.get("port").and_then(Value::as_i64) {
                Some(n) => n.to_string(),
                None => match p.get("name").and_then(Value::as_str) {
                    Some(n) => n.to_string(),
                    None => "*".into(),
                },
            };
            list.push(num);
        } else if list.len() == max {
            more = true;
        }
        count += 1;
    }
    list_with_more(&list, more, count, max)
}

/// `formatDiscoveryEndpoints`.
fn format_discovery_endpoints(endpoints: &[Value]) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for e in endpoints {
        for a in arr(e, "/addresses") {
            if list.len() < max {
                list.push(a.as_str().unwrap_or("").to_string());
            } else if list.len() == max {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more(&list, more, count, max)
}

/// `extractCSRStatus`.
fn csr_status(o: &Value) -> String {
    let conds = arr(o, "/status/conditions");
    let has = |t: &str| conds.iter().any(|c| s(c, "/type") == t);
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !s(o, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    status
}

/// `formatHPAMetrics` (autoscaling/v2), or the CPU target of autoscaling/v1.
fn hpa_metrics(def: &ResourceDef, o: &Value) -> String {
    if def.version == "v1" {
        let current = o
            .pointer("/status/currentCPUUtilizationPercentage")
            .and_then(Value::as_i64)
            .map(|c| format!("{c}%"))
            .unwrap_or_else(|| "<unknown>".into());
        let target = o
            .pointer("/spec/targetCPUUtilizationPercentage")
            .and_then(Value::as_i64)
            .map(|t| format!("{t}%"))
            .unwrap_or_else(|| "<auto>".into());
        return format!("cpu: {current}/{target}");
    }
    let specs = arr(o, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = arr(o, "/status/currentMetrics");
    let max = 2;
    let mut list: Vec<String> = Vec::new();
    for (idx, spec) in specs.iter().enumerate() {
        let st = statuses.get(idx);
        let q = |v: Option<&Value>| quantity(v);
        let item = match s(spec, "/type") {
            "External" | "Object" => {
                let key = if s(spec, "/type") == "External" {
                    "external"
                } else {
                    "object"
                };
                let cur_obj = st.and_then(|st| st.get(key)).filter(|v| v.is_object());
                if let Some(avg) = spec.pointer(&format!("/{key}/target/averageValue")) {
                    let current = cur_obj
                        .and_then(|c| c.pointer("/current/averageValue"))
                        .map(|v| q(Some(v)))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!("{current}/{} (avg)", q(Some(avg)))
                } else {
                    let current = cur_obj
                        .map(|c| q(c.pointer("/current/value")))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!(
                        "{current}/{}",
                        q(spec.pointer(&format!("/{key}/target/value")))
                    )
                }
            }
            "Pods" => {
                let current = st
                    .and_then(|st| st.get("pods"))
                    .filter(|v| v.is_object())
                    .map(|c| q(c.pointer("/current/averageValue")))
                    .unwrap_or_else(|| "<unknown>".into());
                format!("{current}/{}", q(spec.pointer("/pods/target/averageValue")))
            }
            "Resource" | "ContainerResource" => {
                let key = if s(spec, "/type") == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let rname = s(spec, &format!("/{key}/name"));
                let cur_obj = st.and_then(|st| st.get(key)).filter(|v| v.is_object());
                if let Some(avg) = spec.pointer(&format!("/{key}/target/averageValue")) {
                    let current = cur_obj
                        .map(|c| q(c.pointer("/current/averageValue")))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!("{rname}: {current}/{}", q(Some(avg)))
                } else {
                    let current = cur_obj
                        .and_then(|c| c.pointer("/current/averageUtilization"))
                        .and_then(Value::as_i64)
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<unknown>".into());
                    let target = spec
                        .pointer(&format!("/{key}/target/averageUtilization"))
                        .and_then(Value::as_i64)
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<auto>".into());
                    format!("{rname}: {current}/{target}")
                }
            }
            _ => "<unknown type>".into(),
        };
        list.push(item);
    }
    let count = list.len();
    if count > max {
        list.truncate(max);
        return format!("{} + {} more...", list.join(", "), count - max);
    }
    list.join(", ")
}
