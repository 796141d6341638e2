//! Pure pieces of pod status: phase (upstream's `getPhase`), QoS class, conditions with
//! stable `lastTransitionTime`s.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::quantity;

/// The pod phase from its container statuses, as upstream's kubelet computes it.
pub fn phase(
    restart_policy: &str,
    init: &[ContainerStatus],
    containers: &[ContainerStatus],
    init_failed: bool,
) -> &'static str {
    if init_failed && restart_policy == "Never" {
        return "Failed";
    }
    let init_pending = init.iter().any(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_none_or(|t| t.exit_code != 0)
    });
    if init_pending {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in containers {
        let st = s.state.as_ref();
        if st.and_then(|x| x.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = st.and_then(|x| x.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.and_then(|x| x.waiting.as_ref()).is_some() {
            match s.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
                Some(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            }
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if restart_policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// `status.qosClass`.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        for name in ["cpu", "memory"] {
            let l = quantity::resource(limits, name);
            let q = quantity::resource(requests, name).or(l);
            if l.is_some() || q.is_some_and(|v| v > 0) {
                any = true;
            }
            if l.is_none() || l != q {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A condition keeping the old `lastTransitionTime` when its status did not change.
pub fn condition(
    prev: Option<&Vec<PodCondition>>,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let status = if status { "True" } else { "False" };
    let old = prev
        .into_iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == status);
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: old
            .and_then(|c| c.last_transition_time.clone())
            .or_else(|| Some(Time(jiff::Timestamp::now()))),
        last_probe_time: None,
        observed_generation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };

    fn running() -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn exited(code: i32) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn crashloop() -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            last_state: exited(1).state,
            ..Default::default()
        }
    }

    #[test]
    fn phases() {
        assert_eq!(phase("Always", &[], &[running()], false), "Running");
        assert_eq!(phase("Always", &[], &[crashloop()], false), "Running");
        assert_eq!(phase("Never", &[], &[exited(0)], false), "Succeeded");
        assert_eq!(phase("Never", &[], &[exited(1)], false), "Failed");
        assert_eq!(phase("OnFailure", &[], &[exited(0)], false), "Succeeded");
        assert_eq!(phase("Never", &[running()], &[], false), "Pending");
        assert_eq!(phase("Never", &[exited(1)], &[], true), "Failed");
        assert_eq!(
            phase(
                "Always",
                &[],
                &[running(), ContainerStatus::default()],
                false
            ),
            "Pending"
        );
    }
}
