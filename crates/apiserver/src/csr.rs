//! `certificates.k8s.io/v1` CertificateSigningRequests: upstream's strategies
//! (`pkg/registry/certificates/certificates/strategy.go`), validation
//! (`pkg/apis/certificates/validation`) and the admission plugins CertificateApproval,
//! CertificateSigning and CertificateSubjectRestriction.
//!
//! - create: `spec.username/uid/groups/extra` come from the authenticated requester, never the
//!   body; status starts empty.
//! - update of the object: spec and status are the stored ones (only metadata changes).
//! - `/status`: the certificate (once) and conditions other than Approved/Denied.
//! - `/approval`: only the Approved/Denied conditions.

use base64::Engine as _;
use kumo_apimachinery::{ApiError, Cause};
use kumo_registry::ResourceDef;
use serde_json::{Value, json};

use crate::api::User;
use crate::http::Ctx;
use crate::objects::now_rfc3339;

/// Whether `def` is the CSR resource.
pub fn is_csr(def: &ResourceDef) -> bool {
    def.group == "certificates.k8s.io" && def.kind == "CertificateSigningRequest"
}

const APPROVAL_TYPES: &[&str] = &["Approved", "Denied"];

fn conditions(o: &Value) -> Vec<Value> {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn ctype(c: &Value) -> &str {
    c.get("type").and_then(Value::as_str).unwrap_or("")
}

fn set_conditions(o: &mut Value, conds: Vec<Value>) {
    let Some(obj) = o.as_object_mut() else {
        return;
    };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    if let Some(s) = status.as_object_mut() {
        if conds.is_empty() {
            s.remove("conditions");
        } else {
            s.insert("conditions".into(), Value::Array(conds));
        }
    }
}

/// Fills `lastUpdateTime`/`lastTransitionTime` the way upstream's `populateConditionTimestamps`
/// does: a condition whose status did not change keeps its transition time.
fn stamp(old: Option<&Value>, new: &mut Value) {
    let now = now_rfc3339();
    let old_conds = old.map(conditions).unwrap_or_default();
    let mut conds = conditions(new);
    for c in &mut conds {
        let Some(m) = c.as_object_mut() else {
            continue;
        };
        if m.get("lastUpdateTime").is_none_or(Value::is_null) {
            m.insert("lastUpdateTime".into(), json!(now));
        }
        if m.get("lastTransitionTime").is_none_or(Value::is_null) {
            let t = m.get("type").cloned();
            let st = m.get("status").cloned();
            let prev = old_conds
                .iter()
                .find(|o| o.get("type") == t.as_ref() && o.get("status") == st.as_ref())
                .and_then(|o| o.get("lastTransitionTime"))
                .filter(|v| !v.is_null())
                .cloned();
            m.insert(
                "lastTransitionTime".into(),
                prev.unwrap_or_else(|| json!(now)),
            );
        }
    }
    if !conds.is_empty() {
        set_conditions(new, conds);
    }
}

/// The CSR strategies. `incoming` is the object as the client sent it (before the generic
/// strategy replaced its status), `new` the object about to be validated and stored.
pub fn prepare(
    user: &User,
    old: Option<&Value>,
    incoming: &Value,
    new: &mut Value,
    sub: Option<&str>,
) {
    let Some(old) = old else {
        let Some(o) = new.as_object_mut() else {
            return;
        };
        o.insert("status".into(), json!({}));
        let spec = o.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("username".into(), json!(user.name));
            spec.remove("uid");
            spec.remove("groups");
            spec.remove("extra");
            if !user.uid.is_empty() {
                spec.insert("uid".into(), json!(user.uid));
            }
            if !user.groups.is_empty() {
                spec.insert("groups".into(), json!(user.groups));
            }
            if !user.extra.is_empty() {
                spec.insert("extra".into(), json!(user.extra));
            }
        }
        return;
    };
    if let Some(o) = new.as_object_mut() {
        match old.get("spec") {
            Some(s) => o.insert("spec".into(), s.clone()),
            None => o.remove("spec"),
        };
    }
    match sub {
        Some("status") => {
            // Approval is the approval subresource's business.
            let mut conds: Vec<Value> = conditions(new)
                .into_iter()
                .filter(|c| !APPROVAL_TYPES.contains(&ctype(c)))
                .collect();
            conds.extend(
                conditions(old)
                    .into_iter()
                    .filter(|c| APPROVAL_TYPES.contains(&ctype(c))),
            );
            set_conditions(new, conds);
        }
        Some("approval") => {
            let mut conds: Vec<Value> = conditions(old)
                .into_iter()
                .filter(|c| !APPROVAL_TYPES.contains(&ctype(c)))
                .collect();
            conds.extend(
                conditions(incoming)
                    .into_iter()
                    .filter(|c| APPROVAL_TYPES.contains(&ctype(c))),
            );
            // The certificate and everything else of the status stay as stored.
            if let Some(o) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            set_conditions(new, conds);
        }
        _ => {
            if let Some(o) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
        }
    }
    stamp(Some(old), new);
}

/// The request PEM of `spec.request` (base64 in JSON).
pub fn request_pem(o: &Value) -> Option<Vec<u8>> {
    let b64 = o.pointer("/spec/request")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// `spec.signerName`.
pub fn signer_name(o: &Value) -> &str {
    o.pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Upstream's `ValidateSignerName`.
fn signer_name_causes(name: &str) -> Vec<Cause> {
    const FIELD: &str = "spec.signerName";
    if name.is_empty() {
        return vec![Cause::required(FIELD)];
    }
    let bad = |d: &str| vec![Cause::invalid(FIELD, &json!(name), d)];
    let Some((domain, path)) = name.split_once('/') else {
        return bad(
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        );
    };
    let mut c = Vec::new();
    let dns = kumo_apimachinery::validation::is_dns1123_subdomain(domain);
    if !dns.is_empty() || !domain.contains('.') {
        c.extend(bad(
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    }
    if path.is_empty()
        || path.len() > 253
        || path.split('/').any(|seg| {
            seg.is_empty()
                || seg == "."
                || seg == ".."
                || !seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        })
    {
        c.extend(bad("validating path: must be a valid path segment"));
    }
    if name == "kubernetes.io/legacy-unknown" {
        c.extend(bad(
            "the legacy signerName is not allowed via this API version",
        ));
    }
    c
}

fn validate_conditions(o: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let conds = conditions(o);
    let mut seen = std::collections::BTreeSet::new();
    for (i, cond) in conds.iter().enumerate() {
        let path = format!("status.conditions[{i}]");
        let t = ctype(cond);
        if t.is_empty() {
            c.push(Cause::required(format!("{path}.type")));
            continue;
        }
        let status = cond.get("status").and_then(Value::as_str).unwrap_or("");
        if matches!(t, "Approved" | "Denied" | "Failed") {
            if !seen.insert(t.to_string()) {
                c.push(Cause::duplicate(format!("{path}.type"), &json!(t)));
            }
            if status != "True" {
                c.push(Cause::not_supported(
                    format!("{path}.status"),
                    &json!(status),
                    &["True"],
                ));
            }
        } else if !matches!(status, "True" | "False" | "Unknown") {
            c.push(Cause::not_supported(
                format!("{path}.status"),
                &json!(status),
                &["False", "True", "Unknown"],
            ));
        }
    }
    if seen.contains("Approved") && seen.contains("Denied") {
        c.push(Cause::invalid(
            "status.conditions",
            &Value::String("Approved, Denied".into()),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    c
}

/// Upstream's create/update validation of a CSR (beyond the generic metadata rules).
pub fn validate(old: Option<&Value>, new: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    if old.is_none() {
        match request_pem(new) {
            None => c.push(Cause::required("spec.request")),
            Some(pem) => {
                if let Err(e) = kumo_auth::parse_csr_pem(&pem) {
                    c.push(Cause::new(
                        "FieldValueInvalid",
                        "spec.request",
                        format!("Invalid value: []byte{{...}}: {e}"),
                    ));
                }
            }
        }
        c.extend(signer_name_causes(signer_name(new)));
        let usages: Vec<&Value> = new
            .pointer("/spec/usages")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if usages.is_empty() {
            c.push(Cause::required("spec.usages"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, u) in usages.iter().enumerate() {
            let s = u.as_str().unwrap_or("");
            if !kumo_auth::csr::KEY_USAGES.contains(&s) {
                c.push(Cause::not_supported(
                    format!("spec.usages[{i}]"),
                    u,
                    kumo_auth::csr::KEY_USAGES,
                ));
            } else if !seen.insert(s) {
                c.push(Cause::duplicate(format!("spec.usages[{i}]"), u));
            }
        }
        if let Some(e) = new
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            && e < 600
        {
            c.push(Cause::invalid(
                "spec.expirationSeconds",
                &json!(e),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    c.extend(validate_conditions(new));
    let cert = new
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(old) = old {
        let old_types: Vec<String> = conditions(old)
            .iter()
            .map(|x| ctype(x).to_string())
            .collect();
        let new_types: Vec<String> = conditions(new)
            .iter()
            .map(|x| ctype(x).to_string())
            .collect();
        for t in ["Approved", "Denied", "Failed"] {
            if old_types.iter().any(|x| x == t) && !new_types.iter().any(|x| x == t) {
                c.push(Cause::forbidden(
                    "status.conditions",
                    &format!("updates may not remove a condition of type \"{t}\""),
                ));
            }
        }
        let old_cert = old
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !old_cert.is_empty() && old_cert != cert {
            c.push(Cause::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
    if !cert.is_empty() {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(cert)
            .unwrap_or_default();
        if kumo_auth::pki::parse_certs_pem(&pem).is_err() {
            c.push(Cause::invalid(
                "status.certificate",
                &Value::String("<certificate data>".into()),
                "must contain at least one CERTIFICATE PEM block",
            ));
        }
        let types: Vec<String> = conditions(new)
            .iter()
            .map(|x| ctype(x).to_string())
            .collect();
        if !types.iter().any(|t| t == "Approved") || types.iter().any(|t| t == "Denied") {
            c.push(Cause::forbidden(
                "status.certificate",
                "certificate may only be set on an approved request",
            ));
        }
    }
    c
}

/// Whether `user` may `verb` (`approve`, `sign`) for `signer`: on `signers` named after the
/// signer or its `<domain>/*` wildcard (upstream's `IsAuthorizedForSignerName`).
pub fn authorized_for_signer(ctx: &Ctx, user: &User, verb: &str, signer: &str) -> bool {
    let Some(a) = &ctx.api.authorizer else {
        return true;
    };
    let mut attrs =
        kumo_auth::Attributes::resource(verb, "certificates.k8s.io", "signers", "", signer);
    attrs.api_version = "*".into();
    if a.authorize(user, &attrs).is_allowed() {
        return true;
    }
    let Some((domain, _)) = signer.split_once('/') else {
        return false;
    };
    attrs.name = format!("{domain}/*");
    a.authorize(user, &attrs).is_allowed()
}

/// The CSR admission plugins: CertificateSubjectRestriction on create, CertificateApproval on
/// `/approval`, CertificateSigning on `/status` writes that set the certificate.
pub fn admit(
    ctx: &Ctx,
    old: Option<&Value>,
    new: &Value,
    sub: Option<&str>,
) -> Result<(), ApiError> {
    let name = crate::objects::meta_str(new, "name").unwrap_or("");
    let signer = signer_name(new);
    let forbid = |why: String| {
        ApiError::forbidden(format!(
            "certificatesigningrequests.certificates.k8s.io \"{name}\" is forbidden: {why}"
        ))
        .with_details("certificates.k8s.io", "certificatesigningrequests", name)
    };
    match (old, sub) {
        (None, _) => {
            if signer == "kubernetes.io/kube-apiserver-client"
                && let Some(pem) = request_pem(new)
                && let Ok(info) = kumo_auth::parse_csr_pem(&pem)
                && info.organizations.iter().any(|o| o == "system:masters")
            {
                return Err(forbid(format!(
                    "use of {signer} signer with system:masters group is not allowed"
                )));
            }
            Ok(())
        }
        (Some(_), Some("approval")) => {
            if authorized_for_signer(ctx, &ctx.user, "approve", signer) {
                Ok(())
            } else {
                Err(forbid(format!(
                    "user not permitted to approve requests with signerName \"{signer}\""
                )))
            }
        }
        (Some(old), Some("status")) => {
            let cert = |o: &Value| {
                o.pointer("/status/certificate")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            if cert(old) == cert(new) || authorized_for_signer(ctx, &ctx.user, "sign", signer) {
                Ok(())
            } else {
                Err(forbid(format!(
                    "user not permitted to sign requests with signerName \"{signer}\""
                )))
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        let mut u = kumo_auth::UserInfo::new("system:bootstrap:abcdef", ["system:bootstrappers"]);
        u.uid = "u1".into();
        u
    }

    fn approved(reason: &str) -> Value {
        json!({"type": "Approved", "status": "True", "reason": reason})
    }

    #[test]
    fn create_takes_the_requester_and_clears_status() {
        let mut new = json!({"spec": {"username": "mallory", "groups": ["system:masters"],
            "extra": {"x": ["y"]}}, "status": {"conditions": [approved("x")]}});
        let incoming = new.clone();
        prepare(&user(), None, &incoming, &mut new, None);
        assert_eq!(new["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(new["spec"]["uid"], "u1");
        assert_eq!(
            new["spec"]["groups"],
            json!(["system:bootstrappers", "system:authenticated"])
        );
        assert!(new["spec"].get("extra").is_none());
        assert_eq!(new["status"], json!({}));
    }

    #[test]
    fn subresources_change_only_their_part() {
        let old = json!({"spec": {"signerName": "a.io/b"},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        // /approval: Approved may be added; Failed stays; spec and certificate do not move.
        let incoming = json!({"spec": {"signerName": "evil.io/x"},
            "status": {"certificate": "Zm9v", "conditions": [approved("ok")]}});
        let mut new = incoming.clone();
        new["status"] = old["status"].clone();
        prepare(&user(), Some(&old), &incoming, &mut new, Some("approval"));
        assert_eq!(new["spec"]["signerName"], "a.io/b");
        assert!(new["status"].get("certificate").is_none());
        let types: Vec<&str> = new["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(ctype)
            .collect();
        assert_eq!(types, ["Failed", "Approved"]);
        assert!(new["status"]["conditions"][1]["lastUpdateTime"].is_string());
        // /status: Approved cannot be slipped in; the stored one stays.
        let old = json!({"spec": {"signerName": "a.io/b"},
            "status": {"conditions": [approved("kept")]}});
        let incoming = json!({"spec": {}, "status": {"certificate": "Zm9v", "conditions": []}});
        let mut new = old.clone();
        new["status"] = incoming["status"].clone();
        prepare(&user(), Some(&old), &incoming, &mut new, Some("status"));
        assert_eq!(new["status"]["certificate"], "Zm9v");
        assert_eq!(new["status"]["conditions"][0]["reason"], "kept");
    }

    #[test]
    fn validation_messages() {
        let msgs = |old: Option<&Value>, new: &Value| -> Vec<String> {
            validate(old, new)
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect()
        };
        let m = msgs(None, &json!({"spec": {"signerName": "x", "usages": []}}));
        assert!(
            m.contains(&"spec.request: Required value".to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.usages: Required value".to_string()),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("spec.signerName: Invalid value")),
            "{m:?}"
        );
        let both = json!({"status": {"conditions": [approved("a"),
            {"type": "Denied", "status": "True"}]}});
        let m = msgs(Some(&json!({})), &both);
        assert!(m.iter().any(|x| x.contains("mutually exclusive")), "{m:?}");
        let old = json!({"status": {"conditions": [approved("a")], "certificate": "Zm9v"}});
        let m = msgs(Some(&old), &json!({"status": {"certificate": "YmFy"}}));
        assert!(
            m.iter()
                .any(|x| x.contains("may not remove a condition of type \"Approved\"")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|x| x.contains("may not modify existing certificate content")),
            "{m:?}"
        );
        assert!(signer_name_causes("example.com/my-signer").is_empty());
        assert!(!signer_name_causes("kubernetes.io/legacy-unknown").is_empty());
    }
}
