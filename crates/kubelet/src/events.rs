//! Events the kubelet records about pods and its node (core/v1, source `kubelet`/<node>),
//! fire-and-forget: a failed Event write is logged, never retried, never blocks a pod.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tracing::debug;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// Writes Events as one node.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    node: String,
    enabled: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("node", &self.node)
            .finish()
    }
}

/// The reference of `pod` (optionally to one of its containers, `spec.containers{name}`).
pub fn pod_ref(pod: &Pod, container: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: container.map(|c| {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|ics| ics.iter().any(|ic| ic.name == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        }),
    }
}

impl Recorder {
    pub fn new(client: kube::Client, node: String, enabled: bool) -> Self {
        Recorder {
            client,
            node,
            enabled,
        }
    }

    /// Records an Event about `object` in `namespace` (a node's Events go to `default`).
    pub fn record(&self, object: ObjectReference, type_: &str, reason: &str, message: String) {
        if !self.enabled {
            return;
        }
        let now = jiff::Timestamp::now();
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("unknown"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.to_string()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            action: Some(reason.to_string()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                debug!(error = %e, "could not record event");
            }
        });
    }

    pub fn pod(&self, pod: &Pod, container: Option<&str>, type_: &str, reason: &str, msg: String) {
        self.record(pod_ref(pod, container), type_, reason, msg);
    }
}
