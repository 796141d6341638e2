//! kumo kubelet: joins a cluster (bootstrap token + CSR, like kubeadm), registers its Node and
//! keeps it alive with a Lease, runs the pods bound to it through a [`kumo_runtime::Runtime`]
//! and serves the kubelet API (`/containerLogs`, `/exec`, `/healthz`, `/metrics`).

pub mod bootstrap;
pub mod directory;
pub mod server;
