//! Tests of the public API, one module per part.

#![allow(clippy::unwrap_used)]

mod authn_tests;
mod kubeconfig_tests;
mod pki_tests;
mod rbac_tests;
mod sa_tests;
mod tls_tests;

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::authn::ObjectLookup;

/// An in-memory [`ObjectLookup`].
#[derive(Default)]
pub(crate) struct Objects {
    pub secrets: Mutex<HashMap<(String, String), Secret>>,
    pub service_accounts: Mutex<HashMap<(String, String), ServiceAccount>>,
    pub pods: Mutex<HashMap<(String, String), Pod>>,
    pub nodes: Mutex<HashMap<String, Node>>,
}

pub(crate) fn meta(ns: Option<&str>, name: &str, uid: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: ns.map(str::to_string),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

impl Objects {
    pub fn add_secret(&self, s: Secret) {
        let key = (
            s.metadata.namespace.clone().unwrap(),
            s.metadata.name.clone().unwrap(),
        );
        self.secrets.lock().unwrap().insert(key, s);
    }
    pub fn add_sa(&self, ns: &str, name: &str, uid: &str) {
        self.service_accounts.lock().unwrap().insert(
            (ns.into(), name.into()),
            ServiceAccount {
                metadata: meta(Some(ns), name, uid),
                ..Default::default()
            },
        );
    }
    pub fn add_pod(&self, ns: &str, name: &str, uid: &str) {
        self.pods.lock().unwrap().insert(
            (ns.into(), name.into()),
            Pod {
                metadata: meta(Some(ns), name, uid),
                ..Default::default()
            },
        );
    }
    pub fn add_node(&self, name: &str, uid: &str) {
        self.nodes.lock().unwrap().insert(
            name.into(),
            Node {
                metadata: meta(None, name, uid),
                ..Default::default()
            },
        );
    }
}

impl ObjectLookup for Objects {
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.secrets
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned()
    }
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccount> {
        self.service_accounts
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned()
    }
    fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned()
    }
    fn node(&self, name: &str) -> Option<Node> {
        self.nodes.lock().unwrap().get(name).cloned()
    }
}
