//! List semantics of the built-in types, the facts upstream keeps in struct tags
//! (`patchStrategy`, `patchMergeKey`, `listType`, `listMapKeys`) and publishes as
//! `x-kubernetes-patch-*` / `x-kubernetes-list-*` in OpenAPI.
//!
//! Strategic merge patch ([`crate::smp`]) and server-side apply ([`crate::managed`]) both ask
//! [`list_meta`] what a list at a path is. Paths are field names from the object root with
//! list indices left out, e.g. `["spec", "template", "spec", "containers", "ports"]` for a
//! Deployment.
//!
//! The facts are kept by type, as upstream does: a table of types ([`TypeDef`]), each with the
//! fields ([`FieldDef`]) that carry list or patch metadata or lead to a type that does, and per
//! kind the root type ([`root_type`]). A path resolves by walking the fields, so
//! `apps/v1 Deployment spec.template.spec.containers` goes Deployment → DeploymentSpec →
//! PodTemplateSpec → PodSpec. Fields that are absent from the table have no metadata: lists
//! are atomic and replaced by strategic merge patch, objects merge key by key (upstream's
//! default for untagged fields).
//!
//! Tags were checked against upstream `k8s.io/api` (`core/v1`, `apps/v1`, `batch/v1`,
//! `policy/v1`) and `k8s.io/apimachinery` (`meta/v1`) sources. Two lists carry a
//! `patchMergeKey` while their `listType` is `atomic` (`PodStatus.hostIPs`,
//! `JobStatus.conditions`): server-side apply replaces them, strategic merge patch merges them
//! by key. [`ListMeta`] describes them as atomic with `smp_merge: true`; the merge key is in
//! [`SmpMeta::merge_key`] ([`FieldDef::smp`]).

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// Replaced as a whole (upstream's default for lists without tags).
    Atomic,
    /// A set of scalars (`patchStrategy: merge` on a scalar list, `listType: set`).
    Set,
    /// A list of objects identified by these keys (`patchMergeKey` is the first key).
    Map(Vec<&'static str>),
}

/// What [`list_meta`] knows about one list field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListMeta {
    /// `listType` / `listMapKeys` (what server-side apply uses).
    pub kind: ListKind,
    /// Strategic merge patch merges (true) or replaces (false) this list.
    pub smp_merge: bool,
    /// `patchStrategy: retainKeys` on the parent struct (e.g. `volumes[*]`, `strategy`).
    pub retain_keys: bool,
}

impl ListMeta {
    /// The SMP merge key, if the list merges by key.
    pub fn merge_key(&self) -> Option<&'static str> {
        match &self.kind {
            ListKind::Map(keys) if self.smp_merge => keys.first().copied(),
            _ => None,
        }
    }
}

/// The list semantics of the field at `path` in an object of `api_version`/`kind`, or `None`
/// when the path is not a known list (callers then treat it as atomic).
pub fn list_meta(api_version: &str, kind: &str, path: &[&str]) -> Option<ListMeta> {
    field_meta(api_version, kind, path).and_then(FieldDef::list_meta)
}

/// The strategic-merge-patch tags of one field (`patchStrategy`, `patchMergeKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmpMeta {
    /// `patchStrategy` contains `merge`: lists merge (by `merge_key` for objects, as a set
    /// for scalars).
    pub merge: bool,
    /// `patchStrategy` contains `retainKeys`.
    pub retain_keys: bool,
    /// `patchStrategy: replace`: the value is replaced, not merged.
    pub replace: bool,
    /// `patchMergeKey`.
    pub merge_key: Option<&'static str>,
}

/// `listType` / `listMapKeys` of a list field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListType {
    Atomic,
    Set,
    Map(&'static [&'static str]),
}

/// One type of the table: a Go struct of the built-in API, reduced to the fields that matter
/// for list semantics.
#[derive(Debug)]
pub struct TypeDef {
    name: &'static str,
    fields: &'static [FieldDef],
}

impl TypeDef {
    /// The Go type name (`PodSpec`, `Container`, …), as upstream's errors name it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The field with this JSON name, if the table knows it.
    pub fn field(&'static self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// One field of a [`TypeDef`].
#[derive(Debug)]
pub struct FieldDef {
    name: &'static str,
    /// The struct type of the value, or of the list's elements.
    ty: Option<&'static TypeDef>,
    list: Option<ListType>,
    smp: SmpMeta,
}

impl FieldDef {
    /// The JSON field name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The type of the value (for a list: of its elements), when the table describes it.
    pub fn value_type(&self) -> Option<&'static TypeDef> {
        self.ty
    }

    /// Whether the field is a list.
    pub fn is_list(&self) -> bool {
        self.list.is_some()
    }

    /// The strategic-merge-patch tags.
    pub fn smp(&self) -> SmpMeta {
        self.smp
    }

    /// The list semantics, for list fields.
    pub fn list_meta(&self) -> Option<ListMeta> {
        let kind = match self.list? {
            ListType::Atomic => ListKind::Atomic,
            ListType::Set => ListKind::Set,
            ListType::Map(keys) => ListKind::Map(keys.to_vec()),
        };
        Some(ListMeta {
            kind,
            smp_merge: self.smp.merge,
            retain_keys: self.smp.retain_keys,
        })
    }
}

/// The field at `path` in an object of `api_version`/`kind`, when the table knows it.
pub fn field_meta(api_version: &str, kind: &str, path: &[&str]) -> Option<&'static FieldDef> {
    let mut ty = root_type(api_version, kind)?;
    let (last, parents) = path.split_last()?;
    for seg in parents {
        ty = ty.field(seg)?.ty?;
    }
    ty.field(last)
}

/// The root type of a built-in kind (`apps/v1`, `Deployment` → `Deployment`), or `None` for
/// kinds the table does not describe (custom resources, and built-in kinds without lists
/// that merge).
pub fn root_type(api_version: &str, kind: &str) -> Option<&'static TypeDef> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    KINDS
        .iter()
        .find(|k| k.group == group && k.kind == kind && k.versions.contains(&version))
        .map(|k| k.root)
}

/// Whether `api_version` belongs to an API group that Kubernetes itself serves (the core
/// group and the `*.k8s.io` groups and their legacy names), as opposed to custom resources.
pub fn is_builtin_group(api_version: &str) -> bool {
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    BUILTIN_GROUPS.contains(&group)
}

const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

struct KindDef {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    root: &'static TypeDef,
}

// ---------------------------------------------------------------------------------------------
// Table builders.

const NO_SMP: SmpMeta = SmpMeta {
    merge: false,
    retain_keys: false,
    replace: false,
    merge_key: None,
};

/// `patchStrategy:"merge" patchMergeKey:"<key>"`.
const fn merge_by(key: &'static str) -> SmpMeta {
    SmpMeta {
        merge: true,
        retain_keys: false,
        replace: false,
        merge_key: Some(key),
    }
}

/// `patchStrategy:"merge,retainKeys" patchMergeKey:"<key>"`.
const fn merge_retain_by(key: &'static str) -> SmpMeta {
    SmpMeta {
        merge: true,
        retain_keys: true,
        replace: false,
        merge_key: Some(key),
    }
}

/// `patchStrategy:"merge"` on a scalar list.
const MERGE_SET: SmpMeta = SmpMeta {
    merge: true,
    retain_keys: false,
    replace: false,
    merge_key: None,
};

/// `patchStrategy:"retainKeys"` on a struct.
const RETAIN_KEYS: SmpMeta = SmpMeta {
    merge: false,
    retain_keys: true,
    replace: false,
    merge_key: None,
};

/// A struct-valued field.
const fn obj(name: &'static str, ty: &'static TypeDef) -> FieldDef {
    FieldDef {
        name,
        ty: Some(ty),
        list: None,
        smp: NO_SMP,
    }
}

/// A list without tags or with `listType: atomic`.
const fn atomic(name: &'static str, ty: Option<&'static TypeDef>) -> FieldDef {
    FieldDef {
        name,
        ty,
        list: Some(ListType::Atomic),
        smp: NO_SMP,
    }
}

/// A `listType: set` scalar list with the given SMP tags.
const fn set(name: &'static str, smp: SmpMeta) -> FieldDef {
    FieldDef {
        name,
        ty: None,
        list: Some(ListType::Set),
        smp,
    }
}

/// A `listType: map` list with `listMapKeys` and the given SMP tags.
const fn map(
    name: &'static str,
    ty: Option<&'static TypeDef>,
    keys: &'static [&'static str],
    smp: SmpMeta,
) -> FieldDef {
    FieldDef {
        name,
        ty,
        list: Some(ListType::Map(keys)),
        smp,
    }
}

/// A `listType: atomic` list that strategic merge patch still merges by key (upstream keeps
/// both tags on a few fields).
const fn atomic_smp(name: &'static str, smp: SmpMeta) -> FieldDef {
    FieldDef {
        name,
        ty: None,
        list: Some(ListType::Atomic),
        smp,
    }
}

const fn ty(name: &'static str, fields: &'static [FieldDef]) -> TypeDef {
    TypeDef { name, fields }
}

const fn kind(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    root: &'static TypeDef,
) -> KindDef {
    KindDef {
        group,
        versions,
        kind,
        root,
    }
}

// ---------------------------------------------------------------------------------------------
// meta/v1

static OBJECT_META: TypeDef = ty(
    "ObjectMeta",
    &[
        // +patchMergeKey=uid +patchStrategy=merge +listType=map +listMapKey=uid
        map("ownerReferences", None, &["uid"], merge_by("uid")),
        // +patchStrategy=merge +listType=set
        set("finalizers", MERGE_SET),
        // +listType=atomic
        atomic("managedFields", None),
    ],
);

static LABEL_SELECTOR: TypeDef = ty(
    "LabelSelector",
    &[atomic(
        "matchExpressions",
        Some(&LABEL_SELECTOR_REQUIREMENT),
    )],
);

static LABEL_SELECTOR_REQUIREMENT: TypeDef =
    ty("LabelSelectorRequirement", &[atomic("values", None)]);

// ---------------------------------------------------------------------------------------------
// core/v1: pods

static POD: TypeDef = ty(
    "Pod",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &POD_SPEC),
        obj("status", &POD_STATUS),
    ],
);

static POD_TEMPLATE_SPEC: TypeDef = ty(
    "PodTemplateSpec",
    &[obj("metadata", &OBJECT_META), obj("spec", &POD_SPEC)],
);

static POD_TEMPLATE: TypeDef = ty(
    "PodTemplate",
    &[
        obj("metadata", &OBJECT_META),
        obj("template", &POD_TEMPLATE_SPEC),
    ],
);

static POD_SPEC: TypeDef = ty(
    "PodSpec",
    &[
        // +patchMergeKey=name +patchStrategy=merge,retainKeys +listType=map +listMapKey=name
        map("volumes", Some(&VOLUME), &["name"], merge_retain_by("name")),
        // +patchMergeKey=name +patchStrategy=merge +listType=map +listMapKey=name
        map(
            "initContainers",
            Some(&CONTAINER),
            &["name"],
            merge_by("name"),
        ),
        map("containers", Some(&CONTAINER), &["name"], merge_by("name")),
        map(
            "ephemeralContainers",
            Some(&EPHEMERAL_CONTAINER),
            &["name"],
            merge_by("name"),
        ),
        map("imagePullSecrets", None, &["name"], merge_by("name")),
        // +listType=atomic
        atomic("tolerations", None),
        // +patchMergeKey=ip +patchStrategy=merge +listType=map +listMapKey=ip
        map("hostAliases", Some(&HOST_ALIAS), &["ip"], merge_by("ip")),
        // +listType=atomic
        atomic("readinessGates", None),
        // +patchMergeKey=topologyKey +patchStrategy=merge
        // +listType=map +listMapKey=topologyKey +listMapKey=whenUnsatisfiable
        map(
            "topologySpreadConstraints",
            Some(&TOPOLOGY_SPREAD_CONSTRAINT),
            &["topologyKey", "whenUnsatisfiable"],
            merge_by("topologyKey"),
        ),
        // +patchMergeKey=name +patchStrategy=merge +listType=map +listMapKey=name
        map("schedulingGates", None, &["name"], merge_by("name")),
        // +patchMergeKey=name +patchStrategy=merge,retainKeys +listType=map +listMapKey=name
        map("resourceClaims", None, &["name"], merge_retain_by("name")),
    ],
);

static VOLUME: TypeDef = ty("Volume", &[]);

static HOST_ALIAS: TypeDef = ty("HostAlias", &[atomic("hostnames", None)]);

static TOPOLOGY_SPREAD_CONSTRAINT: TypeDef = ty(
    "TopologySpreadConstraint",
    &[
        obj("labelSelector", &LABEL_SELECTOR),
        atomic("matchLabelKeys", None),
    ],
);

const CONTAINER_FIELDS: &[FieldDef] = &[
    atomic("command", None),
    atomic("args", None),
    // +patchMergeKey=containerPort +patchStrategy=merge
    // +listType=map +listMapKey=containerPort +listMapKey=protocol
    map(
        "ports",
        None,
        &["containerPort", "protocol"],
        merge_by("containerPort"),
    ),
    atomic("envFrom", None),
    // +patchMergeKey=name +patchStrategy=merge +listType=map +listMapKey=name
    map("env", None, &["name"], merge_by("name")),
    obj("resources", &RESOURCE_REQUIREMENTS),
    // +listType=atomic
    atomic("resizePolicy", None),
    // +patchMergeKey=mountPath +patchStrategy=merge +listType=map +listMapKey=mountPath
    map("volumeMounts", None, &["mountPath"], merge_by("mountPath")),
    // +patchMergeKey=devicePath +patchStrategy=merge +listType=map +listMapKey=devicePath
    map(
        "volumeDevices",
        None,
        &["devicePath"],
        merge_by("devicePath"),
    ),
];

static CONTAINER: TypeDef = ty("Container", CONTAINER_FIELDS);

static EPHEMERAL_CONTAINER: TypeDef = ty("EphemeralContainer", CONTAINER_FIELDS);

static RESOURCE_REQUIREMENTS: TypeDef = ty(
    "ResourceRequirements",
    // +listType=map +listMapKey=name (no patch strategy)
    &[map("claims", None, &["name"], NO_SMP)],
);

static POD_STATUS: TypeDef = ty(
    "PodStatus",
    &[
        // +patchMergeKey=type +patchStrategy=merge +listType=map +listMapKey=type
        map("conditions", None, &["type"], merge_by("type")),
        // +patchStrategy=merge +patchMergeKey=ip +listType=atomic
        atomic_smp("hostIPs", merge_by("ip")),
        // +patchStrategy=merge +patchMergeKey=ip +listType=map +listMapKey=ip
        map("podIPs", None, &["ip"], merge_by("ip")),
        // +listType=atomic
        atomic("initContainerStatuses", None),
        atomic("containerStatuses", None),
        atomic("ephemeralContainerStatuses", None),
        // +patchMergeKey=name +patchStrategy=merge,retainKeys +listType=map +listMapKey=name
        map(
            "resourceClaimStatuses",
            None,
            &["name"],
            merge_retain_by("name"),
        ),
    ],
);

// core/v1: replication controllers

static REPLICATION_CONTROLLER: TypeDef = ty(
    "ReplicationController",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &REPLICATION_CONTROLLER_SPEC),
        obj("status", &CONDITIONS_BY_TYPE_STATUS),
    ],
);

static REPLICATION_CONTROLLER_SPEC: TypeDef = ty(
    "ReplicationControllerSpec",
    &[obj("template", &POD_TEMPLATE_SPEC)],
);

/// A status whose only list is `conditions` merged by `type`
/// (+patchMergeKey=type +patchStrategy=merge +listType=map +listMapKey=type).
static CONDITIONS_BY_TYPE_STATUS: TypeDef = ty(
    "Status",
    &[map("conditions", None, &["type"], merge_by("type"))],
);

// core/v1: services and endpoints

static SERVICE: TypeDef = ty(
    "Service",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &SERVICE_SPEC),
        obj("status", &SERVICE_STATUS),
    ],
);

static SERVICE_SPEC: TypeDef = ty(
    "ServiceSpec",
    &[
        // +patchMergeKey=port +patchStrategy=merge +listType=map +listMapKey=port
        // +listMapKey=protocol
        map("ports", None, &["port", "protocol"], merge_by("port")),
        atomic("clusterIPs", None),
        atomic("externalIPs", None),
        atomic("loadBalancerSourceRanges", None),
        atomic("ipFamilies", None),
    ],
);

static SERVICE_STATUS: TypeDef = ty(
    "ServiceStatus",
    &[
        obj("loadBalancer", &LOAD_BALANCER_STATUS),
        map("conditions", None, &["type"], merge_by("type")),
    ],
);

static LOAD_BALANCER_STATUS: TypeDef = ty("LoadBalancerStatus", &[atomic("ingress", None)]);

static ENDPOINTS: TypeDef = ty(
    "Endpoints",
    &[
        obj("metadata", &OBJECT_META),
        atomic("subsets", Some(&ENDPOINT_SUBSET)),
    ],
);

static ENDPOINT_SUBSET: TypeDef = ty(
    "EndpointSubset",
    &[
        atomic("addresses", None),
        atomic("notReadyAddresses", None),
        atomic("ports", None),
    ],
);

static SERVICE_ACCOUNT: TypeDef = ty(
    "ServiceAccount",
    &[
        obj("metadata", &OBJECT_META),
        // +patchMergeKey=name +patchStrategy=merge +listType=map +listMapKey=name
        map("secrets", None, &["name"], merge_by("name")),
        // +listType=atomic
        atomic("imagePullSecrets", None),
    ],
);

// core/v1: nodes and namespaces

static NODE: TypeDef = ty(
    "Node",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &NODE_SPEC),
        obj("status", &NODE_STATUS),
    ],
);

static NODE_SPEC: TypeDef = ty(
    "NodeSpec",
    &[
        // +patchStrategy=merge +listType=set
        set("podCIDRs", MERGE_SET),
        // +listType=atomic
        atomic("taints", None),
    ],
);

static NODE_STATUS: TypeDef = ty(
    "NodeStatus",
    &[
        map("conditions", None, &["type"], merge_by("type")),
        // +patchMergeKey=type +patchStrategy=merge +listType=map +listMapKey=type
        map("addresses", None, &["type"], merge_by("type")),
        atomic("images", None),
        atomic("volumesInUse", None),
        atomic("volumesAttached", None),
    ],
);

static NAMESPACE: TypeDef = ty(
    "Namespace",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &NAMESPACE_SPEC),
        obj("status", &CONDITIONS_BY_TYPE_STATUS),
    ],
);

// +listType=atomic
static NAMESPACE_SPEC: TypeDef = ty("NamespaceSpec", &[atomic("finalizers", None)]);

// core/v1: storage

static PERSISTENT_VOLUME: TypeDef = ty(
    "PersistentVolume",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &PERSISTENT_VOLUME_SPEC),
    ],
);

static PERSISTENT_VOLUME_SPEC: TypeDef = ty(
    "PersistentVolumeSpec",
    &[atomic("accessModes", None), atomic("mountOptions", None)],
);

static PERSISTENT_VOLUME_CLAIM: TypeDef = ty(
    "PersistentVolumeClaim",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &PERSISTENT_VOLUME_CLAIM_SPEC),
        obj("status", &PERSISTENT_VOLUME_CLAIM_STATUS),
    ],
);

static PERSISTENT_VOLUME_CLAIM_SPEC: TypeDef = ty(
    "PersistentVolumeClaimSpec",
    &[
        atomic("accessModes", None),
        obj("selector", &LABEL_SELECTOR),
    ],
);

static PERSISTENT_VOLUME_CLAIM_STATUS: TypeDef = ty(
    "PersistentVolumeClaimStatus",
    &[
        atomic("accessModes", None),
        map("conditions", None, &["type"], merge_by("type")),
    ],
);

// core/v1: objects without lists that merge (metadata only)

static METADATA_ONLY: TypeDef = ty("Object", &[obj("metadata", &OBJECT_META)]);

static LIMIT_RANGE: TypeDef = ty(
    "LimitRange",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &LIMIT_RANGE_SPEC),
    ],
);

static LIMIT_RANGE_SPEC: TypeDef = ty("LimitRangeSpec", &[atomic("limits", None)]);

static RESOURCE_QUOTA: TypeDef = ty(
    "ResourceQuota",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &RESOURCE_QUOTA_SPEC),
    ],
);

static RESOURCE_QUOTA_SPEC: TypeDef = ty("ResourceQuotaSpec", &[atomic("scopes", None)]);

// ---------------------------------------------------------------------------------------------
// apps/v1

static DEPLOYMENT: TypeDef = ty(
    "Deployment",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &DEPLOYMENT_SPEC),
        obj("status", &CONDITIONS_BY_TYPE_STATUS),
    ],
);

static DEPLOYMENT_SPEC: TypeDef = ty(
    "DeploymentSpec",
    &[
        obj("selector", &LABEL_SELECTOR),
        obj("template", &POD_TEMPLATE_SPEC),
        // +patchStrategy=retainKeys
        FieldDef {
            name: "strategy",
            ty: None,
            list: None,
            smp: RETAIN_KEYS,
        },
    ],
);

/// ReplicaSetSpec and DaemonSetSpec: a selector and a pod template.
static WORKLOAD_SPEC: TypeDef = ty(
    "WorkloadSpec",
    &[
        obj("selector", &LABEL_SELECTOR),
        obj("template", &POD_TEMPLATE_SPEC),
    ],
);

static REPLICA_SET: TypeDef = ty(
    "ReplicaSet",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &WORKLOAD_SPEC),
        obj("status", &CONDITIONS_BY_TYPE_STATUS),
    ],
);

static DAEMON_SET: TypeDef = ty(
    "DaemonSet",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &WORKLOAD_SPEC),
        obj("status", &CONDITIONS_BY_TYPE_STATUS),
    ],
);

static STATEFUL_SET: TypeDef = ty(
    "StatefulSet",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &STATEFUL_SET_SPEC),
        obj("status", &CONDITIONS_BY_TYPE_STATUS),
    ],
);

static STATEFUL_SET_SPEC: TypeDef = ty(
    "StatefulSetSpec",
    &[
        obj("selector", &LABEL_SELECTOR),
        obj("template", &POD_TEMPLATE_SPEC),
        // +listType=atomic
        atomic("volumeClaimTemplates", Some(&PERSISTENT_VOLUME_CLAIM)),
    ],
);

// ---------------------------------------------------------------------------------------------
// batch/v1

static JOB: TypeDef = ty(
    "Job",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &JOB_SPEC),
        obj("status", &JOB_STATUS),
    ],
);

static JOB_SPEC: TypeDef = ty(
    "JobSpec",
    &[
        obj("selector", &LABEL_SELECTOR),
        obj("template", &POD_TEMPLATE_SPEC),
    ],
);

static JOB_STATUS: TypeDef = ty(
    "JobStatus",
    &[
        // +patchMergeKey=type +patchStrategy=merge +listType=atomic
        atomic_smp("conditions", merge_by("type")),
        obj("uncountedTerminatedPods", &UNCOUNTED_TERMINATED_PODS),
    ],
);

static UNCOUNTED_TERMINATED_PODS: TypeDef = ty(
    "UncountedTerminatedPods",
    // +listType=set (no patch strategy)
    &[set("succeeded", NO_SMP), set("failed", NO_SMP)],
);

static CRON_JOB: TypeDef = ty(
    "CronJob",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &CRON_JOB_SPEC),
        obj("status", &CRON_JOB_STATUS),
    ],
);

static CRON_JOB_SPEC: TypeDef = ty("CronJobSpec", &[obj("jobTemplate", &JOB_TEMPLATE_SPEC)]);

static JOB_TEMPLATE_SPEC: TypeDef = ty(
    "JobTemplateSpec",
    &[obj("metadata", &OBJECT_META), obj("spec", &JOB_SPEC)],
);

// +listType=atomic
static CRON_JOB_STATUS: TypeDef = ty("CronJobStatus", &[atomic("active", None)]);

// ---------------------------------------------------------------------------------------------
// discovery.k8s.io/v1, policy/v1, rbac.authorization.k8s.io/v1

static ENDPOINT_SLICE: TypeDef = ty(
    "EndpointSlice",
    &[
        obj("metadata", &OBJECT_META),
        // +listType=atomic
        atomic("endpoints", Some(&ENDPOINT)),
        atomic("ports", None),
    ],
);

// +listType=set (no patch strategy)
static ENDPOINT: TypeDef = ty("Endpoint", &[set("addresses", NO_SMP)]);

static POD_DISRUPTION_BUDGET: TypeDef = ty(
    "PodDisruptionBudget",
    &[
        obj("metadata", &OBJECT_META),
        obj("spec", &POD_DISRUPTION_BUDGET_SPEC),
        obj("status", &CONDITIONS_BY_TYPE_STATUS),
    ],
);

static POD_DISRUPTION_BUDGET_SPEC: TypeDef = ty(
    "PodDisruptionBudgetSpec",
    &[obj("selector", &LABEL_SELECTOR)],
);

static ROLE: TypeDef = ty(
    "Role",
    &[obj("metadata", &OBJECT_META), atomic("rules", None)],
);

static CLUSTER_ROLE: TypeDef = ty(
    "ClusterRole",
    &[
        obj("metadata", &OBJECT_META),
        atomic("rules", None),
        obj("aggregationRule", &AGGREGATION_RULE),
    ],
);

static AGGREGATION_RULE: TypeDef = ty("AggregationRule", &[atomic("clusterRoleSelectors", None)]);

static ROLE_BINDING: TypeDef = ty(
    "RoleBinding",
    &[obj("metadata", &OBJECT_META), atomic("subjects", None)],
);

// ---------------------------------------------------------------------------------------------
// Kinds.

static KINDS: &[KindDef] = &[
    kind("", &["v1"], "Pod", &POD),
    kind("", &["v1"], "PodTemplate", &POD_TEMPLATE),
    kind(
        "",
        &["v1"],
        "ReplicationController",
        &REPLICATION_CONTROLLER,
    ),
    kind("", &["v1"], "Service", &SERVICE),
    kind("", &["v1"], "Endpoints", &ENDPOINTS),
    kind("", &["v1"], "ServiceAccount", &SERVICE_ACCOUNT),
    kind("", &["v1"], "Node", &NODE),
    kind("", &["v1"], "Namespace", &NAMESPACE),
    kind("", &["v1"], "PersistentVolume", &PERSISTENT_VOLUME),
    kind(
        "",
        &["v1"],
        "PersistentVolumeClaim",
        &PERSISTENT_VOLUME_CLAIM,
    ),
    kind("", &["v1"], "Secret", &METADATA_ONLY),
    kind("", &["v1"], "ConfigMap", &METADATA_ONLY),
    kind("", &["v1"], "Event", &METADATA_ONLY),
    kind("", &["v1"], "LimitRange", &LIMIT_RANGE),
    kind("", &["v1"], "ResourceQuota", &RESOURCE_QUOTA),
    kind("apps", &["v1"], "Deployment", &DEPLOYMENT),
    kind("apps", &["v1"], "ReplicaSet", &REPLICA_SET),
    kind("apps", &["v1"], "StatefulSet", &STATEFUL_SET),
    kind("apps", &["v1"], "DaemonSet", &DAEMON_SET),
    kind("apps", &["v1"], "ControllerRevision", &METADATA_ONLY),
    kind("batch", &["v1"], "Job", &JOB),
    kind("batch", &["v1"], "CronJob", &CRON_JOB),
    kind(
        "discovery.k8s.io",
        &["v1"],
        "EndpointSlice",
        &ENDPOINT_SLICE,
    ),
    kind(
        "policy",
        &["v1"],
        "PodDisruptionBudget",
        &POD_DISRUPTION_BUDGET,
    ),
    kind("rbac.authorization.k8s.io", &["v1"], "Role", &ROLE),
    kind(
        "rbac.authorization.k8s.io",
        &["v1"],
        "ClusterRole",
        &CLUSTER_ROLE,
    ),
    kind(
        "rbac.authorization.k8s.io",
        &["v1"],
        "RoleBinding",
        &ROLE_BINDING,
    ),
    kind(
        "rbac.authorization.k8s.io",
        &["v1"],
        "ClusterRoleBinding",
        &ROLE_BINDING,
    ),
    kind("coordination.k8s.io", &["v1"], "Lease", &METADATA_ONLY),
    kind("networking.k8s.io", &["v1"], "Ingress", &METADATA_ONLY),
    kind("networking.k8s.io", &["v1"], "IngressClass", &METADATA_ONLY),
    kind(
        "networking.k8s.io",
        &["v1"],
        "NetworkPolicy",
        &METADATA_ONLY,
    ),
    kind(
        "scheduling.k8s.io",
        &["v1"],
        "PriorityClass",
        &METADATA_ONLY,
    ),
    kind("storage.k8s.io", &["v1"], "StorageClass", &METADATA_ONLY),
];

/// The `MergeItem` test type of upstream's `strategicpatch/patch_test.go`, so its cases can be
/// run here unchanged.
#[cfg(test)]
pub(crate) mod test_schema {
    use super::*;

    const REPLACE: SmpMeta = SmpMeta {
        merge: false,
        retain_keys: false,
        replace: true,
        merge_key: None,
    };

    pub(crate) static MERGE_ITEM: TypeDef = ty(
        "MergeItem",
        &[
            map(
                "mergingList",
                Some(&MERGE_ITEM),
                &["name"],
                merge_by("name"),
            ),
            atomic("nonMergingList", Some(&MERGE_ITEM)),
            set("mergingIntList", MERGE_SET),
            atomic("nonMergingIntList", None),
            // *MergeItem with patchStrategy:"merge" patchMergeKey:"name" (upstream's tests
            // also send it as a list)
            map(
                "mergeItemPtr",
                Some(&MERGE_ITEM),
                &["name"],
                merge_by("name"),
            ),
            FieldDef {
                name: "replacingItem",
                ty: None,
                list: None,
                smp: REPLACE,
            },
            FieldDef {
                name: "retainKeysMap",
                ty: Some(&RETAIN_KEYS_MERGE_ITEM),
                list: None,
                smp: RETAIN_KEYS,
            },
            map(
                "retainKeysMergingList",
                Some(&MERGE_ITEM),
                &["name"],
                merge_retain_by("name"),
            ),
        ],
    );

    pub(crate) static RETAIN_KEYS_MERGE_ITEM: TypeDef = ty(
        "RetainKeysMergeItem",
        &[
            set("mergingIntList", MERGE_SET),
            map(
                "mergingList",
                Some(&MERGE_ITEM),
                &["name"],
                merge_by("name"),
            ),
            atomic("nonMergingList", Some(&MERGE_ITEM)),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_meta(keys: &[&'static str], smp_merge: bool) -> Option<ListMeta> {
        Some(ListMeta {
            kind: ListKind::Map(keys.to_vec()),
            smp_merge,
            retain_keys: false,
        })
    }

    #[test]
    fn object_meta_lists() {
        assert_eq!(
            list_meta("v1", "ConfigMap", &["metadata", "finalizers"]),
            Some(ListMeta {
                kind: ListKind::Set,
                smp_merge: true,
                retain_keys: false
            })
        );
        let owners = list_meta("apps/v1", "Deployment", &["metadata", "ownerReferences"]);
        assert_eq!(owners, map_meta(&["uid"], true));
        assert_eq!(owners.and_then(|m| m.merge_key()), Some("uid"));
        assert_eq!(
            list_meta("v1", "Secret", &["metadata", "managedFields"]),
            Some(ListMeta {
                kind: ListKind::Atomic,
                smp_merge: false,
                retain_keys: false
            })
        );
    }

    #[test]
    fn deployment_resolves_through_the_pod_template() {
        let containers = list_meta(
            "apps/v1",
            "Deployment",
            &["spec", "template", "spec", "containers"],
        );
        assert_eq!(containers, map_meta(&["name"], true));
        let ports = list_meta(
            "apps/v1",
            "Deployment",
            &["spec", "template", "spec", "containers", "ports"],
        )
        .expect("ports");
        assert_eq!(ports.kind, ListKind::Map(vec!["containerPort", "protocol"]));
        assert_eq!(ports.merge_key(), Some("containerPort"));
        let env = list_meta(
            "apps/v1",
            "StatefulSet",
            &["spec", "template", "spec", "initContainers", "env"],
        );
        assert_eq!(env, map_meta(&["name"], true));
        let mounts = list_meta(
            "batch/v1",
            "CronJob",
            &[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "spec",
                "containers",
                "volumeMounts",
            ],
        );
        assert_eq!(mounts, map_meta(&["mountPath"], true));
        let devices = list_meta(
            "v1",
            "Pod",
            &["spec", "ephemeralContainers", "volumeDevices"],
        );
        assert_eq!(devices, map_meta(&["devicePath"], true));
    }

    #[test]
    fn pod_spec_lists() {
        let volumes = list_meta("v1", "Pod", &["spec", "volumes"]).expect("volumes");
        assert!(volumes.retain_keys);
        assert_eq!(volumes.merge_key(), Some("name"));
        let tolerations = list_meta("v1", "Pod", &["spec", "tolerations"]).expect("tol");
        assert_eq!(tolerations.kind, ListKind::Atomic);
        assert!(!tolerations.smp_merge);
        assert_eq!(tolerations.merge_key(), None);
        assert_eq!(
            list_meta("v1", "Pod", &["spec", "hostAliases"]),
            map_meta(&["ip"], true)
        );
        let tsc = list_meta("v1", "Pod", &["spec", "topologySpreadConstraints"]).expect("tsc");
        assert_eq!(
            tsc.kind,
            ListKind::Map(vec!["topologyKey", "whenUnsatisfiable"])
        );
        assert_eq!(tsc.merge_key(), Some("topologyKey"));
        assert_eq!(
            list_meta("v1", "Pod", &["spec", "imagePullSecrets"]),
            map_meta(&["name"], true)
        );
        assert_eq!(
            list_meta("v1", "Pod", &["spec", "schedulingGates"]),
            map_meta(&["name"], true)
        );
        let claims = list_meta("v1", "Pod", &["spec", "resourceClaims"]).expect("claims");
        assert!(claims.retain_keys && claims.smp_merge);
        let resize = list_meta("v1", "Pod", &["spec", "containers", "resizePolicy"]);
        assert_eq!(resize.map(|m| m.kind), Some(ListKind::Atomic));
        // listType=map without a patch strategy: SSA merges, SMP replaces.
        let res_claims = list_meta("v1", "Pod", &["spec", "containers", "resources", "claims"])
            .expect("resource claims");
        assert_eq!(res_claims.kind, ListKind::Map(vec!["name"]));
        assert!(!res_claims.smp_merge);
        assert_eq!(res_claims.merge_key(), None);
    }

    #[test]
    fn pod_status_lists() {
        assert_eq!(
            list_meta("v1", "Pod", &["status", "conditions"]),
            map_meta(&["type"], true)
        );
        let statuses = list_meta("v1", "Pod", &["status", "containerStatuses"]).expect("cs");
        assert_eq!(statuses.kind, ListKind::Atomic);
        assert!(!statuses.smp_merge);
        // hostIPs: listType=atomic for SSA, merged by ip for SMP.
        let host_ips = field_meta("v1", "Pod", &["status", "hostIPs"]).expect("hostIPs");
        assert_eq!(
            host_ips.list_meta().map(|m| (m.kind, m.smp_merge)),
            Some((ListKind::Atomic, true))
        );
        assert_eq!(host_ips.smp().merge_key, Some("ip"));
        assert_eq!(
            list_meta("v1", "Pod", &["status", "podIPs"]),
            map_meta(&["ip"], true)
        );
    }

    #[test]
    fn workload_and_other_kinds() {
        for kind in ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"] {
            assert_eq!(
                list_meta("apps/v1", kind, &["status", "conditions"]),
                map_meta(&["type"], true),
                "{kind}"
            );
        }
        let vct = list_meta("apps/v1", "StatefulSet", &["spec", "volumeClaimTemplates"]);
        assert_eq!(vct.map(|m| m.kind), Some(ListKind::Atomic));
        let strategy =
            field_meta("apps/v1", "Deployment", &["spec", "strategy"]).expect("strategy");
        assert!(strategy.smp().retain_keys);
        assert!(!strategy.is_list());
        let job_conditions = field_meta("batch/v1", "Job", &["status", "conditions"]).expect("jc");
        assert_eq!(job_conditions.smp().merge_key, Some("type"));
        assert_eq!(
            list_meta("v1", "Service", &["spec", "ports"]).map(|m| (m.merge_key(), m.kind)),
            Some((Some("port"), ListKind::Map(vec!["port", "protocol"])))
        );
        assert_eq!(
            list_meta("v1", "Node", &["spec", "taints"]).map(|m| m.kind),
            Some(ListKind::Atomic)
        );
        assert_eq!(
            list_meta("v1", "Node", &["status", "addresses"]),
            map_meta(&["type"], true)
        );
        assert_eq!(
            list_meta("v1", "Node", &["spec", "podCIDRs"]).map(|m| (m.kind, m.smp_merge)),
            Some((ListKind::Set, true))
        );
        for kind in [
            "Namespace",
            "PersistentVolumeClaim",
            "ReplicationController",
        ] {
            assert_eq!(
                list_meta("v1", kind, &["status", "conditions"]),
                map_meta(&["type"], true),
                "{kind}"
            );
        }
        assert_eq!(
            list_meta("rbac.authorization.k8s.io/v1", "ClusterRole", &["rules"]).map(|m| m.kind),
            Some(ListKind::Atomic)
        );
        assert_eq!(
            list_meta("v1", "ServiceAccount", &["secrets"]),
            map_meta(&["name"], true)
        );
        assert_eq!(
            list_meta(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                &["endpoints", "addresses"]
            )
            .map(|m| (m.kind, m.smp_merge)),
            Some((ListKind::Set, false))
        );
    }

    #[test]
    fn unknown_paths_and_kinds() {
        assert_eq!(list_meta("v1", "Secret", &["data"]), None);
        assert_eq!(list_meta("v1", "ConfigMap", &[]), None);
        assert_eq!(
            list_meta("v1", "Pod", &["spec", "nope", "containers"]),
            None
        );
        assert_eq!(list_meta("v1", "Pod", &["spec"]), None);
        assert_eq!(
            list_meta("example.com/v1", "Widget", &["spec", "items"]),
            None
        );
        assert_eq!(list_meta("apps/v1beta9", "Deployment", &["metadata"]), None);
        assert!(root_type("apps/v1", "Deployment").is_some());
        assert!(is_builtin_group("v1"));
        assert!(is_builtin_group("apps/v1"));
        assert!(is_builtin_group("networking.k8s.io/v1"));
        assert!(!is_builtin_group("example.com/v1"));
        assert_eq!(
            root_type("v1", "Pod")
                .and_then(|t| t.field("spec"))
                .and_then(FieldDef::value_type)
                .map(TypeDef::name),
            Some("PodSpec")
        );
    }
}
