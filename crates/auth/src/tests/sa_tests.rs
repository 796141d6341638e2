use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Objects;
use crate::authn::serviceaccount::*;
use crate::authn::{NoObjects, TokenAuthenticator, UserInfo};
use crate::pki::ClusterPki;

struct Fixture {
    _dir: tempfile::TempDir,
    pki: ClusterPki,
    sa: ServiceAccountTokens,
    objs: Objects,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    let sa = ServiceAccountTokens::from_pki(&pki).unwrap();
    let objs = Objects::default();
    objs.add_sa("default", "builder", "sa-uid-1");
    objs.add_pod("default", "web-0", "pod-uid-1");
    objs.add_node("n1", "node-uid-1");
    Fixture {
        _dir: dir,
        pki,
        sa,
        objs,
    }
}

fn payload(token: &str) -> serde_json::Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

fn header(token: &str) -> serde_json::Value {
    let p = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn secs(s: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs(s)
}

#[test]
fn issue_and_verify_bound_token() {
    let f = fixture();
    let bound = BoundObject::Pod {
        pod: ObjectRef {
            name: "web-0".into(),
            uid: "pod-uid-1".into(),
        },
        node: Some(ObjectRef {
            name: "n1".into(),
            uid: "node-uid-1".into(),
        }),
    };
    let t =
        f.sa.issue_sa_token("default", "builder", "sa-uid-1", &[], 3600, Some(&bound))
            .unwrap();
    assert_eq!(t.expiration.as_second() - t.issued_at.as_second(), 3600);

    // Header and claims as upstream writes them.
    let h = header(&t.token);
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["kid"], f.sa.key_id());
    let p = payload(&t.token);
    let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        vec![
            "aud",
            "exp",
            "iat",
            "iss",
            "jti",
            "kubernetes.io",
            "nbf",
            "sub"
        ]
    );
    assert_eq!(p["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(
        p["aud"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(p["sub"], "system:serviceaccount:default:builder");
    assert_eq!(p["iat"], p["nbf"]);
    assert_eq!(
        p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(
        p["kubernetes.io"],
        serde_json::json!({
            "namespace": "default",
            "node": {"name": "n1", "uid": "node-uid-1"},
            "pod": {"name": "web-0", "uid": "pod-uid-1"},
            "serviceaccount": {"name": "builder", "uid": "sa-uid-1"},
        })
    );
    // The raw JSON has no whitespace and sorted keys like go-jose.
    let raw = String::from_utf8(
        URL_SAFE_NO_PAD
            .decode(t.token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        raw.starts_with("{\"aud\":[\"https://kubernetes.default.svc.cluster.local\"],\"exp\":"),
        "{raw}"
    );

    let u = f.sa.verify(&t.token, &f.objs).unwrap();
    assert_eq!(u.name, "system:serviceaccount:default:builder");
    assert_eq!(u.uid, "sa-uid-1");
    assert_eq!(
        u.groups,
        vec![
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );
    assert_eq!(u.extra[POD_NAME_KEY], vec!["web-0"]);
    assert_eq!(u.extra[POD_UID_KEY], vec!["pod-uid-1"]);
    assert_eq!(u.extra[NODE_NAME_KEY], vec!["n1"]);
    assert_eq!(u.extra[NODE_UID_KEY], vec!["node-uid-1"]);
    assert_eq!(
        u.extra[crate::authn::CREDENTIAL_ID_KEY],
        vec![format!("JTI={}", p["jti"].as_str().unwrap())]
    );

    // An unbound token for explicit audiences.
    let t2 =
        f.sa.issue_sa_token(
            "default",
            "builder",
            "sa-uid-1",
            &[
                "vault".into(),
                "https://kubernetes.default.svc.cluster.local".into(),
            ],
            600,
            None,
        )
        .unwrap();
    let u2 = f.sa.verify(&t2.token, &NoObjects).err();
    assert!(
        matches!(u2, Some(TokenError::Invalid(_))),
        "SA lookup needed: {u2:?}"
    );
    let u2 = f.sa.verify(&t2.token, &f.objs).unwrap();
    assert!(
        u2.extra
            .keys()
            .all(|k| k == crate::authn::CREDENTIAL_ID_KEY)
    );

    // Through the union authenticator.
    let a = TokenAuthenticator {
        service_accounts: Some(ServiceAccountTokens::from_pki(&f.pki).unwrap()),
        ..Default::default()
    };
    assert_eq!(a.authenticate(&t.token, &f.objs), Some(u));
}

#[test]
fn expired_not_yet_valid_and_leeway() {
    let f = fixture();
    let t =
        f.sa.issue_sa_token("default", "builder", "sa-uid-1", &[], 600, None)
            .unwrap()
            .token;
    assert!(f.sa.verify_at(&t, &f.objs, now() + secs(600 + 30)).is_ok());
    assert_eq!(
        f.sa.verify_at(&t, &f.objs, now() + secs(600 + 120)),
        Err(TokenError::Expired)
    );
    assert!(f.sa.verify_at(&t, &f.objs, now() - secs(30)).is_ok());
    assert_eq!(
        f.sa.verify_at(&t, &f.objs, now() - secs(300)),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn wrong_audience_tampering_and_other_keys() {
    let f = fixture();
    let t =
        f.sa.issue_sa_token(
            "default",
            "builder",
            "sa-uid-1",
            &["vault".into()],
            600,
            None,
        )
        .unwrap()
        .token;
    assert!(matches!(
        f.sa.verify(&t, &f.objs),
        Err(TokenError::InvalidAudience { .. })
    ));
    // A verifier accepting "vault" takes it.
    let v = ServiceAccountTokens::verifier(
        &[f.pki.sa_public_key_spki()],
        DEFAULT_ISSUER,
        vec!["vault".into()],
    )
    .unwrap();
    assert!(v.verify(&t, &f.objs).is_ok());
    assert!(
        v.issue_sa_token("default", "builder", "x", &[], 600, None)
            .is_err()
    );

    let good =
        f.sa.issue_sa_token("default", "builder", "sa-uid-1", &[], 600, None)
            .unwrap()
            .token;
    let parts: Vec<&str> = good.split('.').collect();

    // Tampered payload: claim another ServiceAccount.
    let mut p = payload(&good);
    p["sub"] = "system:serviceaccount:kube-system:admin".into();
    p["kubernetes.io"]["namespace"] = "kube-system".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&p).unwrap()),
        parts[2]
    );
    assert_eq!(
        f.sa.verify(&forged, &f.objs),
        Err(TokenError::InvalidSignature)
    );

    // Tampered signature.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        f.sa.verify(&forged, &f.objs),
        Err(TokenError::InvalidSignature)
    );

    // alg none / HS256 tricks.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        parts[1]
    );
    assert!(matches!(
        f.sa.verify(&none, &f.objs),
        Err(TokenError::Malformed(_))
    ));
    let hs = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
        parts[1],
        parts[2]
    );
    assert!(matches!(
        f.sa.verify(&hs, &f.objs),
        Err(TokenError::Malformed(_))
    ));

    // Signed by another cluster's key.
    let other = fixture();
    let foreign = other
        .sa
        .issue_sa_token("default", "builder", "sa-uid-1", &[], 600, None)
        .unwrap()
        .token;
    assert_eq!(
        f.sa.verify(&foreign, &f.objs),
        Err(TokenError::InvalidSignature)
    );

    // Another issuer is not ours: other authenticators may try it.
    let other_issuer =
        ServiceAccountTokens::new(f.pki.sa_private_key_pkcs8(), "https://elsewhere", vec![])
            .unwrap();
    let t = other_issuer
        .issue_sa_token("default", "builder", "sa-uid-1", &[], 600, None)
        .unwrap()
        .token;
    assert_eq!(
        f.sa.verify(&t, &f.objs),
        Err(TokenError::NotServiceAccountToken)
    );
}

#[test]
fn bound_objects_must_still_exist() {
    let f = fixture();
    let issue = |bound: Option<BoundObject>, sa_uid: &str| {
        f.sa.issue_sa_token("default", "builder", sa_uid, &[], 600, bound.as_ref())
            .unwrap()
            .token
    };
    let pod = |name: &str, uid: &str| BoundObject::Pod {
        pod: ObjectRef {
            name: name.into(),
            uid: uid.into(),
        },
        node: None,
    };
    let invalid = |r: Result<UserInfo, TokenError>| matches!(r, Err(TokenError::Invalid(_)));

    // ServiceAccount recreated with another uid.
    assert!(invalid(f.sa.verify(&issue(None, "old-uid"), &f.objs)));
    // Pod gone or replaced.
    assert!(invalid(
        f.sa.verify(&issue(Some(pod("web-1", "x")), "sa-uid-1"), &f.objs)
    ));
    assert!(invalid(f.sa.verify(
        &issue(Some(pod("web-0", "other")), "sa-uid-1"),
        &f.objs
    )));
    // Pod deleted long ago vs. just now (grace period).
    let t = issue(Some(pod("web-0", "pod-uid-1")), "sa-uid-1");
    {
        let mut pods = f.objs.pods.lock().unwrap();
        let p = pods.get_mut(&("default".into(), "web-0".into())).unwrap();
        p.metadata.deletion_timestamp = Some(Time(now() - secs(5)));
    }
    assert!(f.sa.verify(&t, &f.objs).is_ok());
    {
        let mut pods = f.objs.pods.lock().unwrap();
        let p = pods.get_mut(&("default".into(), "web-0".into())).unwrap();
        p.metadata.deletion_timestamp = Some(Time(now() - secs(300)));
    }
    assert!(invalid(f.sa.verify(&t, &f.objs)));

    // Node-bound tokens check the node.
    let node = |uid: &str| {
        BoundObject::Node(ObjectRef {
            name: "n1".into(),
            uid: uid.into(),
        })
    };
    let u =
        f.sa.verify(&issue(Some(node("node-uid-1")), "sa-uid-1"), &f.objs)
            .unwrap();
    assert_eq!(u.extra[NODE_NAME_KEY], vec!["n1"]);
    assert!(invalid(
        f.sa.verify(&issue(Some(node("stale")), "sa-uid-1"), &f.objs)
    ));

    // Secret-bound tokens check the Secret.
    f.objs.add_secret(Secret {
        metadata: super::meta(Some("default"), "s1", "sec-uid"),
        ..Default::default()
    });
    let sec = |uid: &str| {
        BoundObject::Secret(ObjectRef {
            name: "s1".into(),
            uid: uid.into(),
        })
    };
    assert!(
        f.sa.verify(&issue(Some(sec("sec-uid")), "sa-uid-1"), &f.objs)
            .is_ok()
    );
    assert!(invalid(
        f.sa.verify(&issue(Some(sec("other")), "sa-uid-1"), &f.objs)
    ));

    // Argument checks.
    assert!(f.sa.issue_sa_token("", "b", "u", &[], 600, None).is_err());
    assert!(f.sa.issue_sa_token("d", "b", "u", &[], 0, None).is_err());
    assert!(
        f.sa.issue_sa_token("d", "b", "u", &[], i64::MAX, None)
            .is_err()
    );
}

#[test]
fn legacy_secret_tokens() {
    let f = fixture();
    let token =
        f.sa.issue_legacy_token("default", "builder", "sa-uid-1", "builder-token")
            .unwrap();
    let p = payload(&token);
    assert_eq!(p["iss"], "kubernetes/serviceaccount");
    assert_eq!(
        p["kubernetes.io/serviceaccount/secret.name"],
        "builder-token"
    );
    let mut secret = Secret {
        metadata: super::meta(Some("default"), "builder-token", "s-uid"),
        type_: Some("kubernetes.io/service-account-token".into()),
        data: Some(BTreeMap::from([(
            "token".to_string(),
            ByteString(token.clone().into_bytes()),
        )])),
        ..Default::default()
    };
    f.objs.add_secret(secret.clone());
    let u = f.sa.verify(&token, &f.objs).unwrap();
    assert_eq!(u.name, "system:serviceaccount:default:builder");
    assert_eq!(u.uid, "sa-uid-1");
    // The Secret holds another token: revoked.
    secret.data = Some(BTreeMap::from([(
        "token".to_string(),
        ByteString(b"other".to_vec()),
    )]));
    f.objs.add_secret(secret);
    assert!(matches!(
        f.sa.verify(&token, &f.objs),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn jwks_and_discovery() {
    let f = fixture();
    let jwks = f.sa.jwks();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], f.sa.key_id());
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    // kid = base64url(SHA-256(SubjectPublicKeyInfo DER)), upstream's key id.
    let digest = ring::digest::digest(&ring::digest::SHA256, f.pki.sa_public_key_spki());
    assert_eq!(f.sa.key_id(), URL_SAFE_NO_PAD.encode(digest));
    // The JWK's point verifies a token.
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap());
    let t =
        f.sa.issue_sa_token("default", "builder", "sa-uid-1", &[], 600, None)
            .unwrap()
            .token;
    let (input, sig) = t.rsplit_once('.').unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
        .unwrap();

    let d = f.sa.openid_configuration(None);
    assert_eq!(d["issuer"], DEFAULT_ISSUER);
    assert_eq!(
        d["jwks_uri"],
        "https://kubernetes.default.svc.cluster.local/openid/v1/jwks"
    );
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
}

#[test]
fn garbage_never_panics() {
    let f = fixture();
    let t =
        f.sa.issue_sa_token("default", "builder", "sa-uid-1", &[], 600, None)
            .unwrap()
            .token;
    let mut inputs: Vec<String> = vec![
        "".into(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b.c".into(),
        "e30.e30.".into(),
        format!("{}.e30.", URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#)),
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#),
            URL_SAFE_NO_PAD
                .encode(br#"{"iss":"https://kubernetes.default.svc.cluster.local","exp":1e400}"#)
        ),
        format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#),
            URL_SAFE_NO_PAD
                .encode(br#"{"iss":"https://kubernetes.default.svc.cluster.local","exp":"x"}"#)
        ),
        "x".repeat(100_000),
    ];
    // Every truncation and single-byte change of a real token.
    for i in 0..t.len() {
        inputs.push(t[..i].to_string());
        let mut b = t.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        inputs.push(String::from_utf8(b).unwrap());
    }
    for s in &inputs {
        let r = f.sa.verify(s, &f.objs);
        if s != &t {
            assert!(r.is_err(), "{s}");
        }
    }
    assert!(ServiceAccountTokens::new(b"junk", DEFAULT_ISSUER, vec![]).is_err());
    assert!(ServiceAccountTokens::verifier(&[b"junk"], DEFAULT_ISSUER, vec![]).is_err());
    assert!(ServiceAccountTokens::verifier(&[], DEFAULT_ISSUER, vec![]).is_err());
}

#[test]
fn username_helpers() {
    assert_eq!(
        service_account_username("ns", "n"),
        "system:serviceaccount:ns:n"
    );
    assert_eq!(
        split_service_account_username("system:serviceaccount:ns:n"),
        Some(("ns", "n"))
    );
    assert_eq!(
        split_service_account_username("system:serviceaccount:ns"),
        None
    );
    assert_eq!(
        split_service_account_username("system:serviceaccount::n"),
        None
    );
    assert_eq!(
        split_service_account_username("system:serviceaccount:a:b:c"),
        None
    );
    assert_eq!(split_service_account_username("alice"), None);
}
