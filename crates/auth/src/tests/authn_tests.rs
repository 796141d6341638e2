use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Objects;
use crate::authn::bootstrap::*;
use crate::authn::*;

fn now() -> jiff::Timestamp {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

fn secret(id: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: super::meta(Some("kube-system"), &format!("bootstrap-token-{id}"), "u1"),
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn good(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("token-id", id.to_string()),
        ("token-secret", "0123456789abcdef".to_string()),
        ("usage-bootstrap-authentication", "true".to_string()),
        ("expiration", "2025-06-02T00:00:00Z".to_string()),
    ]
}

fn with(id: &str, f: impl FnOnce(&mut Vec<(&'static str, String)>)) -> Secret {
    let mut d = good(id);
    f(&mut d);
    let d: Vec<(&str, &str)> = d.iter().map(|(k, v)| (*k, v.as_str())).collect();
    secret(id, &d)
}

#[test]
fn bootstrap_token_accepted() {
    let objs = Objects::default();
    objs.add_secret(with("abcdef", |_| {}));
    let u = authenticate_bootstrap_token("abcdef.0123456789abcdef", &objs, now()).unwrap();
    assert_eq!(u.name, "system:bootstrap:abcdef");
    assert_eq!(
        u.groups,
        vec!["system:bootstrappers", "system:authenticated"]
    );
    assert!(u.uid.is_empty());

    // Extra groups are validated, deduplicated and sorted.
    objs.add_secret(with("ghijkl", |d| {
        d.push((
            "auth-extra-groups",
            "system:bootstrappers:kubeadm:default-node-token,system:bootstrappers:a,system:bootstrappers:a".into(),
        ))
    }));
    let u = authenticate_bootstrap_token("ghijkl.0123456789abcdef", &objs, now()).unwrap();
    assert_eq!(
        u.groups,
        vec![
            "system:bootstrappers",
            "system:bootstrappers:a",
            "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated"
        ]
    );
    // No expiration: never expires.
    objs.add_secret(with("noexpi", |d| d.retain(|(k, _)| *k != "expiration")));
    assert!(authenticate_bootstrap_token("noexpi.0123456789abcdef", &objs, now()).is_some());
}

#[test]
fn bootstrap_token_rejected() {
    let objs = Objects::default();
    objs.add_secret(with("abcdef", |_| {}));
    let t = "abcdef.0123456789abcdef";
    // Wrong secret, missing secret, malformed tokens.
    assert!(authenticate_bootstrap_token("abcdef.0123456789abcdee", &objs, now()).is_none());
    assert!(authenticate_bootstrap_token("zzzzzz.0123456789abcdef", &objs, now()).is_none());
    for bad in [
        "",
        ".",
        "abcdef",
        "abcdef.",
        "ABCDEF.0123456789abcdef",
        "abcdef.0123456789abcdef0",
        "abcde.0123456789abcdef",
        "abcdef.0123456789abcdef.x",
        "abcdéf.0123456789abcdef",
    ] {
        assert!(parse_token(bad).is_none(), "{bad}");
        assert!(authenticate_bootstrap_token(bad, &objs, now()).is_none());
    }
    // Expired (at, and after, the expiration instant).
    assert!(
        authenticate_bootstrap_token(t, &objs, "2025-06-02T00:00:00Z".parse().unwrap()).is_some()
    );
    assert!(
        authenticate_bootstrap_token(t, &objs, "2025-06-02T00:00:01Z".parse().unwrap()).is_none()
    );

    let cases: Vec<(&str, Secret)> = vec![
        (
            "bad expiration",
            with("abcdef", |d| d[3].1 = "tomorrow".into()),
        ),
        ("usage not true", with("abcdef", |d| d[2].1 = "yes".into())),
        ("usage missing", with("abcdef", |d| d.remove(2).1.clear())),
        (
            "token-id differs",
            with("abcdef", |d| d[0].1 = "abcdeg".into()),
        ),
        (
            "bad extra group",
            with("abcdef", |d| {
                d.push(("auth-extra-groups", "system:masters".into()))
            }),
        ),
        (
            "bad extra group suffix",
            with("abcdef", |d| {
                d.push(("auth-extra-groups", "system:bootstrappers:x-".into()))
            }),
        ),
        ("wrong type", {
            let mut s = with("abcdef", |_| {});
            s.type_ = Some("Opaque".into());
            s
        }),
        ("being deleted", {
            let mut s = with("abcdef", |_| {});
            s.metadata.deletion_timestamp = Some(Time(now()));
            s
        }),
        ("no data", {
            let mut s = with("abcdef", |_| {});
            s.data = None;
            s
        }),
    ];
    for (what, s) in cases {
        let objs = Objects::default();
        objs.add_secret(s);
        assert!(
            authenticate_bootstrap_token(t, &objs, now()).is_none(),
            "{what}"
        );
    }
}

#[test]
fn bootstrap_token_generation_and_secret() {
    let t = generate_bootstrap_token().unwrap();
    assert!(parse_token(&t).is_some(), "{t}");
    assert_ne!(t, generate_bootstrap_token().unwrap());
    let exp: jiff::Timestamp = "2025-06-02T00:00:00Z".parse().unwrap();
    let s = bootstrap_token_secret(
        &t,
        Some(exp),
        &["system:bootstrappers:kumo:nodes".into()],
        "kumo join",
    )
    .unwrap();
    assert_eq!(
        s.metadata.name.as_deref(),
        Some(format!("bootstrap-token-{}", &t[..6]).as_str())
    );
    assert_eq!(
        s.data.as_ref().unwrap()["expiration"].0,
        b"2025-06-02T00:00:00Z"
    );
    let objs = Objects::default();
    objs.add_secret(s);
    let u = authenticate_bootstrap_token(&t, &objs, now()).unwrap();
    assert!(u.in_group("system:bootstrappers:kumo:nodes"));
    assert!(bootstrap_token_secret("nope", None, &[], "").is_err());
    assert!(bootstrap_token_secret(&t, None, &["system:masters".into()], "").is_err());
}

#[test]
fn token_authenticator_union_and_bearer_header() {
    let objs = Objects::default();
    objs.add_secret(with("abcdef", |_| {}));
    let mut a = TokenAuthenticator {
        static_tokens: Some(StaticTokens::parse("s3cr3t,alice,42,\"dev,ops\"\n").unwrap()),
        service_accounts: None,
        bootstrap_tokens: true,
    };
    let alice = a.authenticate_at("s3cr3t", &objs, now()).unwrap();
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.uid, "42");
    assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
    assert_eq!(
        a.authenticate_at("abcdef.0123456789abcdef", &objs, now())
            .unwrap()
            .name,
        "system:bootstrap:abcdef"
    );
    assert!(a.authenticate_at("nope", &objs, now()).is_none());
    a.bootstrap_tokens = false;
    assert!(
        a.authenticate_at("abcdef.0123456789abcdef", &objs, now())
            .is_none()
    );
    assert!(a.authenticate("s3cr3t", &NoObjects).is_some());

    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("  bearer abc  "), Some("abc"));
    assert_eq!(bearer_token("BEARER abc def"), Some("abc"));
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("Bearer"), None);
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token(""), None);
}

#[test]
fn user_info_groups() {
    let anon = UserInfo::anonymous();
    assert_eq!(anon.name, "system:anonymous");
    assert_eq!(anon.groups, vec!["system:unauthenticated"]);
    let mut a2 = anon.clone();
    a2.add_authenticated_group();
    assert_eq!(a2, anon);
    let u = UserInfo::new("bob", ["system:authenticated", "x"]);
    assert_eq!(u.groups, vec!["system:authenticated", "x"]);
}

#[test]
fn cluster_info_signature() {
    // Upstream's test vectors (k8s.io/cluster-bootstrap/token/jws).
    let content = "Hello from the other side. I must have called a thousand times.";
    assert_eq!(
        detached_signature(content, "joshua", "my voice is my passcode"),
        "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
    );
    assert_eq!(
        detached_signature("", "joshua", "my voice is my passcode"),
        "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"
    );
    assert_eq!(
        detached_signature(
            content,
            "joshua",
            "my voice is my passcode. my voice is my passcode"
        ),
        "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..SFoKn0-YxqnvpSExt4LuCZ_7pvIBdX3SoUO_NsTpkdg"
    );
    // Detached HS256 JWS: header..signature, header {"alg":"HS256","kid":id}.
    let sig = detached_signature("hello", "abcdef", "0123456789abcdef");
    let parts: Vec<&str> = sig.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(parts[1].is_empty());
    use base64::Engine as _;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[0])
        .unwrap();
    assert_eq!(header, br#"{"alg":"HS256","kid":"abcdef"}"#);
    assert!(detached_signature_is_valid(
        &sig,
        "hello",
        "abcdef",
        "0123456789abcdef"
    ));
    assert!(!detached_signature_is_valid(
        &sig,
        "hello!",
        "abcdef",
        "0123456789abcdef"
    ));
    assert!(!detached_signature_is_valid(
        &sig,
        "hello",
        "abcdef",
        "0123456789abcdee"
    ));
    assert!(!detached_signature_is_valid(
        "",
        "hello",
        "abcdef",
        "0123456789abcdef"
    ));
    let kc = crate::kubeconfig::Kubeconfig::cluster_only("https://10.0.0.1:6443", "CA");
    let text = kc.to_yaml().unwrap();
    assert!(text.contains("server: https://10.0.0.1:6443"), "{text}");
    assert!(
        crate::kubeconfig::Kubeconfig::from_yaml(&text)
            .unwrap()
            .users
            .is_empty()
    );
}
