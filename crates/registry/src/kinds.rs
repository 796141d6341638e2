//! The k8s-openapi type of each built-in kind, looked up by group/version/kind.
//!
//! Everything that needs the Rust type of a kind (its schema for OpenAPI, typed decoding for
//! `decode_check`) goes through [`with_kind`] with a [`KindVisitor`].

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;

/// What a kind's Rust type offers: its API identity, its schema and its serde impls.
pub trait KindType:
    k8s_openapi::Resource + schemars::JsonSchema + serde::de::DeserializeOwned + serde::Serialize
{
}

impl<T> KindType for T where
    T: k8s_openapi::Resource
        + schemars::JsonSchema
        + serde::de::DeserializeOwned
        + serde::Serialize
{
}

/// Called with the Rust type of a kind.
pub trait KindVisitor {
    type Out;
    fn visit<T: KindType>(self) -> Self::Out;
}

macro_rules! kinds {
    ($($group:literal $version:literal $kind:literal => $ty:ty;)*) => {
        /// Calls `visitor` with the k8s-openapi type of `group/version, Kind=kind`, or returns
        /// `None` for a kind kumo has no type for (custom resources).
        pub fn with_kind<V: KindVisitor>(group: &str, version: &str, kind: &str, visitor: V) -> Option<V::Out> {
            match (group, version, kind) {
                $(($group, $version, $kind) => Some(visitor.visit::<$ty>()),)*
                _ => None,
            }
        }

        /// Every kind [`with_kind`] knows, as `(group, version, kind)`.
        pub const KNOWN_KINDS: &[(&str, &str, &str)] = &[$(($group, $version, $kind)),*];
    };
}

kinds! {
    "" "v1" "Binding" => api::core::v1::Binding;
    "" "v1" "ComponentStatus" => api::core::v1::ComponentStatus;
    "" "v1" "ConfigMap" => api::core::v1::ConfigMap;
    "" "v1" "Endpoints" => api::core::v1::Endpoints;
    "" "v1" "Event" => api::core::v1::Event;
    "" "v1" "LimitRange" => api::core::v1::LimitRange;
    "" "v1" "Namespace" => api::core::v1::Namespace;
    "" "v1" "Node" => api::core::v1::Node;
    "" "v1" "PersistentVolume" => api::core::v1::PersistentVolume;
    "" "v1" "PersistentVolumeClaim" => api::core::v1::PersistentVolumeClaim;
    "" "v1" "Pod" => api::core::v1::Pod;
    "" "v1" "PodTemplate" => api::core::v1::PodTemplate;
    "" "v1" "ReplicationController" => api::core::v1::ReplicationController;
    "" "v1" "ResourceQuota" => api::core::v1::ResourceQuota;
    "" "v1" "Secret" => api::core::v1::Secret;
    "" "v1" "Service" => api::core::v1::Service;
    "" "v1" "ServiceAccount" => api::core::v1::ServiceAccount;
    "admissionregistration.k8s.io" "v1" "MutatingWebhookConfiguration" => api::admissionregistration::v1::MutatingWebhookConfiguration;
    "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicy" => api::admissionregistration::v1::ValidatingAdmissionPolicy;
    "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicyBinding" => api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
    "admissionregistration.k8s.io" "v1" "ValidatingWebhookConfiguration" => api::admissionregistration::v1::ValidatingWebhookConfiguration;
    "apiextensions.k8s.io" "v1" "CustomResourceDefinition" => apiextensions::CustomResourceDefinition;
    "apiregistration.k8s.io" "v1" "APIService" => apiregistration::APIService;
    "apps" "v1" "ControllerRevision" => api::apps::v1::ControllerRevision;
    "apps" "v1" "DaemonSet" => api::apps::v1::DaemonSet;
    "apps" "v1" "Deployment" => api::apps::v1::Deployment;
    "apps" "v1" "ReplicaSet" => api::apps::v1::ReplicaSet;
    "apps" "v1" "StatefulSet" => api::apps::v1::StatefulSet;
    "authentication.k8s.io" "v1" "SelfSubjectReview" => api::authentication::v1::SelfSubjectReview;
    "authentication.k8s.io" "v1" "TokenRequest" => api::authentication::v1::TokenRequest;
    "authentication.k8s.io" "v1" "TokenReview" => api::authentication::v1::TokenReview;
    "authorization.k8s.io" "v1" "LocalSubjectAccessReview" => api::authorization::v1::LocalSubjectAccessReview;
    "authorization.k8s.io" "v1" "SelfSubjectAccessReview" => api::authorization::v1::SelfSubjectAccessReview;
    "authorization.k8s.io" "v1" "SelfSubjectRulesReview" => api::authorization::v1::SelfSubjectRulesReview;
    "authorization.k8s.io" "v1" "SubjectAccessReview" => api::authorization::v1::SubjectAccessReview;
    "autoscaling" "v1" "HorizontalPodAutoscaler" => api::autoscaling::v1::HorizontalPodAutoscaler;
    "autoscaling" "v1" "Scale" => api::autoscaling::v1::Scale;
    "autoscaling" "v2" "HorizontalPodAutoscaler" => api::autoscaling::v2::HorizontalPodAutoscaler;
    "batch" "v1" "CronJob" => api::batch::v1::CronJob;
    "batch" "v1" "Job" => api::batch::v1::Job;
    "certificates.k8s.io" "v1" "CertificateSigningRequest" => api::certificates::v1::CertificateSigningRequest;
    "coordination.k8s.io" "v1" "Lease" => api::coordination::v1::Lease;
    "discovery.k8s.io" "v1" "EndpointSlice" => api::discovery::v1::EndpointSlice;
    "events.k8s.io" "v1" "Event" => api::events::v1::Event;
    "flowcontrol.apiserver.k8s.io" "v1" "FlowSchema" => api::flowcontrol::v1::FlowSchema;
    "flowcontrol.apiserver.k8s.io" "v1" "PriorityLevelConfiguration" => api::flowcontrol::v1::PriorityLevelConfiguration;
    "networking.k8s.io" "v1" "IPAddress" => api::networking::v1::IPAddress;
    "networking.k8s.io" "v1" "Ingress" => api::networking::v1::Ingress;
    "networking.k8s.io" "v1" "IngressClass" => api::networking::v1::IngressClass;
    "networking.k8s.io" "v1" "NetworkPolicy" => api::networking::v1::NetworkPolicy;
    "networking.k8s.io" "v1" "ServiceCIDR" => api::networking::v1::ServiceCIDR;
    "node.k8s.io" "v1" "RuntimeClass" => api::node::v1::RuntimeClass;
    "policy" "v1" "Eviction" => api::policy::v1::Eviction;
    "policy" "v1" "PodDisruptionBudget" => api::policy::v1::PodDisruptionBudget;
    "rbac.authorization.k8s.io" "v1" "ClusterRole" => api::rbac::v1::ClusterRole;
    "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" => api::rbac::v1::ClusterRoleBinding;
    "rbac.authorization.k8s.io" "v1" "Role" => api::rbac::v1::Role;
    "rbac.authorization.k8s.io" "v1" "RoleBinding" => api::rbac::v1::RoleBinding;
    "scheduling.k8s.io" "v1" "PriorityClass" => api::scheduling::v1::PriorityClass;
    "storage.k8s.io" "v1" "CSIDriver" => api::storage::v1::CSIDriver;
    "storage.k8s.io" "v1" "CSINode" => api::storage::v1::CSINode;
    "storage.k8s.io" "v1" "CSIStorageCapacity" => api::storage::v1::CSIStorageCapacity;
    "storage.k8s.io" "v1" "StorageClass" => api::storage::v1::StorageClass;
    "storage.k8s.io" "v1" "VolumeAttachment" => api::storage::v1::VolumeAttachment;
}

/// Whether kumo has a Rust type for this kind.
pub fn is_known(group: &str, version: &str, kind: &str) -> bool {
    KNOWN_KINDS
        .iter()
        .any(|(g, v, k)| *g == group && *v == version && *k == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Gvk;
    impl KindVisitor for Gvk {
        type Out = (&'static str, &'static str, &'static str);
        fn visit<T: KindType>(self) -> Self::Out {
            (T::GROUP, T::VERSION, T::KIND)
        }
    }

    #[test]
    fn table_matches_the_types() {
        for (g, v, k) in KNOWN_KINDS {
            assert_eq!(with_kind(g, v, k, Gvk), Some((*g, *v, *k)));
        }
    }

    #[test]
    fn every_builtin_resource_has_a_type() {
        for def in crate::builtin() {
            assert!(
                is_known(&def.group, &def.version, &def.kind),
                "{}",
                def.kind
            );
            for sub in &def.subresources {
                if sub.name == "status"
                    || matches!(
                        sub.kind.as_str(),
                        "PodExecOptions" | "PodAttachOptions" | "PodPortForwardOptions"
                    )
                {
                    continue;
                }
                assert!(
                    is_known(&sub.group, &sub.version, &sub.kind),
                    "{}",
                    sub.kind
                );
            }
        }
    }
}
