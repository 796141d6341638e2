//! kumo's one integration-test binary. Each module drives real peers (etcdctl, etcd …)
//! against kumo components started as child processes.

mod apiserver_auth;
mod apiserver_badinput;
mod apiserver_clients;
mod apiserver_kubectl;
mod controller_manager;
mod cri_runtime;
mod exec_proxy;
mod federation;
mod kubelet;
mod kubelet_server;
mod process_runtime;
mod scheduler;
mod store_badinput;
mod store_conformance;
mod store_durability;
mod store_golden;
mod store_metrics;
mod tls_bootstrap;
mod up;
mod up_federation;
mod up_workloads;
