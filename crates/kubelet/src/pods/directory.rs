//! The pod manager's side of [`crate::directory::PodDirectory`]: which pods this node runs and,
//! per container, the current attempt's id and log files, kept current by the pod workers.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use parking_lot::RwLock;

use crate::directory::{ContainerRef, LookupError, PodDirectory};

#[derive(Debug, Clone)]
struct Entry {
    pod: Arc<Pod>,
    containers: HashMap<String, ContainerRef>,
}

/// Pods of one node by (namespace, name).
#[derive(Debug, Default)]
pub struct PodDir {
    inner: RwLock<HashMap<(String, String), Entry>>,
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl PodDir {
    /// Records the latest API object of a pod this node runs.
    pub fn set_pod(&self, pod: Arc<Pod>) {
        let mut inner = self.inner.write();
        let k = key(&pod);
        match inner.get_mut(&k) {
            Some(e) => e.pod = pod,
            None => {
                inner.insert(
                    k,
                    Entry {
                        pod,
                        containers: HashMap::new(),
                    },
                );
            }
        }
    }

    /// Replaces the container table of a pod (after a sync).
    pub fn set_containers(&self, pod: &Pod, containers: HashMap<String, ContainerRef>) {
        if let Some(e) = self.inner.write().get_mut(&key(pod)) {
            e.containers = containers;
        }
    }

    pub fn remove(&self, pod: &Pod) {
        let k = key(pod);
        let mut inner = self.inner.write();
        if inner
            .get(&k)
            .is_some_and(|e| e.pod.metadata.uid == pod.metadata.uid)
        {
            inner.remove(&k);
        }
    }

    /// (pods with a running container, running containers, other containers).
    pub fn counts(&self) -> (usize, usize, usize) {
        let inner = self.inner.read();
        let mut pods = 0;
        let mut running = 0;
        let mut other = 0;
        for e in inner.values() {
            let r = e.containers.values().filter(|c| c.running).count();
            running += r;
            other += e.containers.len() - r;
            if r > 0 {
                pods += 1;
            }
        }
        (pods, running, other)
    }
}

impl PodDirectory for PodDir {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<ContainerRef, LookupError> {
        let inner = self.inner.read();
        let e = inner
            .get(&(namespace.to_string(), pod.to_string()))
            .ok_or_else(|| LookupError::PodNotFound {
                namespace: namespace.into(),
                name: pod.into(),
            })?;
        if let Some(c) = e.containers.get(container) {
            return Ok(c.clone());
        }
        let in_spec = e.pod.spec.as_ref().is_some_and(|s| {
            s.containers.iter().any(|c| c.name == container)
                || s.init_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == container)
        });
        if in_spec {
            return Ok(ContainerRef {
                container_id: None,
                log_path: None,
                previous_log_path: None,
                running: false,
            });
        }
        Err(LookupError::ContainerNotFound {
            pod: pod.into(),
            container: container.into(),
        })
    }

    fn pods(&self) -> Vec<Pod> {
        self.inner
            .read()
            .values()
            .map(|e| (*e.pod).clone())
            .collect()
    }
}
