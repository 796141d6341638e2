//! The etcd v3 wire API: message types (prost) and gRPC services (tonic), client and server.
//!
//! The .proto files under `proto/` are kumo's own, written from the public etcd API reference
//! with the upstream package names and field numbers, so that `etcdctl` and every etcd client
//! interoperate with `kumo store`.
#![allow(clippy::all, missing_docs, rust_2018_idioms)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod authpb {
    tonic::include_proto!("authpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub use etcdserverpb as pb;
