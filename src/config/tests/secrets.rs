//! Secret references in the configuration: signing keys and the etcd password read from the
//! environment, key rotation through a JWK Set in a variable.

use super::*;

/// A resolver over a fixed set of environment variables, as the gateway reads the VM's.
fn env(
    vars: Vec<(&'static str, String)>,
) -> impl Fn(&crate::secret::SecretRef) -> Result<String, String> {
    move |r| match r {
        crate::secret::SecretRef::Env(n) => vars
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("{r} is not set")),
        crate::secret::SecretRef::File(_) => Err(format!("{r} cannot be read")),
    }
}

fn with_secrets(
    v: &Value,
    r: &dyn Fn(&crate::secret::SecretRef) -> Result<String, String>,
) -> Result<Config, ConfigError> {
    Config::from_json_with_secrets(v.to_string().as_bytes(), r)
}

#[test]
fn signing_keys_from_the_environment() {
    let key = generate_jwk(Alg::EdDSA, "from-env", &mut SystemRandom).unwrap();
    let mut v = sample();
    v["signing_keys"] = json!([{"env": "OAUTH_EDGE_KEY"}]);
    let c = with_secrets(&v, &env(vec![("OAUTH_EDGE_KEY", key.to_string())])).unwrap();
    assert_eq!(c.keys.active().unwrap().kid, "from-env");
    // The same key inline gives the same configuration (sealing, counters, nonces).
    let mut inline = sample();
    inline["signing_keys"] = json!([key]);
    assert_eq!(c.counter_key, parse(&inline).unwrap().counter_key);

    // Not set: refused, naming the entry and the variable; without a resolver too.
    let e = with_secrets(&v, &env(vec![])).err().unwrap();
    assert_eq!(
        (e.field.as_str(), e.to_string().as_str()),
        (
            "signing_keys[0]",
            "signing_keys[0]: environment variable OAUTH_EDGE_KEY is not set"
        )
    );
    assert!(parse(&v)
        .unwrap_err()
        .to_string()
        .contains("this host reads no secrets"));

    // The key in the variable is validated as strictly as an inline one.
    let mut bad = key.clone();
    bad["x"] = generate_jwk(Alg::EdDSA, "other", &mut SystemRandom).unwrap()["x"].clone();
    let e = with_secrets(&v, &env(vec![("OAUTH_EDGE_KEY", bad.to_string())]))
        .err()
        .unwrap();
    assert_eq!(e.field, "signing_keys[0]");
    assert_eq!(
        e.to_string(),
        "signing_keys[0] (environment variable OAUTH_EDGE_KEY): key \"from-env\": x does not match d"
    );
}

#[test]
fn rotation_with_a_jwk_set_in_the_environment() {
    let old = generate_jwk(Alg::EdDSA, "2026-11", &mut SystemRandom).unwrap();
    let new = generate_jwk(Alg::ES256, "2026-12", &mut SystemRandom).unwrap();
    let mut v = sample();
    v["signing_keys"] = json!([{"env": "KEYS"}]);
    let set = |keys: Value| env(vec![("KEYS", json!({ "keys": keys }).to_string())]);
    let published = |c: &Config| -> Vec<String> {
        let doc: Value = serde_json::from_slice(c.keys.jwks_json()).unwrap();
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    // 1. The new key is added after the old one: both published, the first private signs.
    let c = with_secrets(&v, &set(json!([old, new]))).unwrap();
    assert_eq!(
        (c.keys.active().unwrap().kid.as_str(), published(&c)),
        ("2026-11", vec!["2026-11".into(), "2026-12".into()])
    );
    // 2. Made active: by order, or by active_signing_key.
    let c = with_secrets(&v, &set(json!([new, old]))).unwrap();
    assert_eq!(c.keys.active().unwrap().kid, "2026-12");
    v["active_signing_key"] = json!("2026-12");
    let c = with_secrets(&v, &set(json!([old, new]))).unwrap();
    assert_eq!(c.keys.active().unwrap().kid, "2026-12");
    // 3. The old private part dropped: still published for tokens in flight.
    let mut old_public = old.clone();
    old_public.as_object_mut().unwrap().remove("d");
    let c = with_secrets(&v, &set(json!([new, old_public]))).unwrap();
    assert_eq!(c.keys.sealing_keys().count(), 1);
    assert_eq!(published(&c).len(), 2);
    // Two variables work as well as one set, and a kid in both is refused.
    v["signing_keys"] = json!([{"env": "A"}, {"env": "B"}]);
    let two = env(vec![("A", old.to_string()), ("B", new.to_string())]);
    assert_eq!(
        published(&with_secrets(&v, &two).unwrap()),
        ["2026-11", "2026-12"]
    );
    let dup = env(vec![
        ("A", old.to_string()),
        ("B", json!({"keys": [new, old]}).to_string()),
    ]);
    let e = with_secrets(&v, &dup).err().unwrap();
    assert_eq!(e.field, "signing_keys[1]");
    assert_eq!(
        e.to_string(),
        "signing_keys[1] (environment variable B, key 2): kid \"2026-11\" is used twice"
    );
}

#[test]
fn etcd_password_from_the_environment() {
    let mut v = sample();
    v["store"] = json!({"backend": "etcd", "etcd": {"cluster": "etcd", "username": "oauth-edge",
                                                     "password": {"env": "ETCD_PASSWORD"}}});
    let c = with_secrets(&v, &env(vec![("ETCD_PASSWORD", "pw\n".into())])).unwrap();
    assert_eq!(
        c.etcd.unwrap().credentials,
        Some(("oauth-edge".to_string(), "pw".to_string()))
    );
    let e = with_secrets(&v, &env(vec![])).err().unwrap();
    assert_eq!(e.field, "store.etcd.password");
    assert_eq!(
        e.to_string(),
        "store.etcd.password: environment variable ETCD_PASSWORD is not set"
    );
    v["store"]["etcd"]["password"] = json!({"env": "ETCD_PASSWORD", "file": "/x"});
    assert!(with_secrets(&v, &env(vec![]))
        .err()
        .unwrap()
        .to_string()
        .starts_with("store.etcd.password: a secret reference"));
    v["store"]["etcd"]["password"] = json!(["pw"]);
    assert!(parse(&v)
        .unwrap_err()
        .to_string()
        .contains("store.etcd.password must be a string"));
    v["store"]["etcd"]["password"] = json!("literal");
    assert!(parse(&v).is_ok());
}
