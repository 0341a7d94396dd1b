//! Secrets kept out of the plugin configuration: wherever the configuration takes a secret (a
//! signing key, the etcd password) it also takes a reference, `{"env": "NAME"}` or
//! `{"file": "/path"}`, read once when the configuration loads.
//!
//! Why: the plugin configuration is readable by whoever can read the Envoy bootstrap, the xDS
//! stream or an Istio `WasmPlugin`; an environment variable of the VM can come from a Kubernetes
//! Secret that only the gateway pod sees.
//!
//! The core does not read anything itself (it never calls the host): the gateway hands
//! [`crate::config::Config::from_json_with_secrets`] a [`Resolve`] that does, and says in its
//! error what went wrong ("environment variable OAUTH_EDGE_KEY is not set"). The core puts the
//! place in the configuration in front ("signing_keys[0]: ...") and validates what it got
//! exactly as if it had been written inline. Nothing read is ever quoted in an error.

use serde_json::{Map, Value};

/// Where a secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable of the VM (in Envoy: `vm_config.environment_variables`).
    Env(String),
    /// A file, by absolute path.
    File(String),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "environment variable {name}"),
            SecretRef::File(path) => write!(f, "file {path}"),
        }
    }
}

/// Reads what a reference points at; an `Err` says why not, naming the reference.
pub type Resolve<'a> = &'a dyn Fn(&SecretRef) -> Result<String, String>;

/// The resolver of hosts that read no secrets (and of `Config::from_json`): every reference is
/// refused, so a configuration that needs one never loads without its secret.
pub fn unavailable(r: &SecretRef) -> Result<String, String> {
    Err(format!("{r} cannot be read: this host reads no secrets"))
}

impl SecretRef {
    /// `None`: not a reference (a literal secret, e.g. an inline JWK). `Some(Err)`: an object
    /// that names `env` or `file` but is not a valid reference (a typo must not turn into a
    /// literal).
    pub fn parse(v: &Value) -> Option<Result<SecretRef, String>> {
        let o = v.as_object()?;
        if !o.contains_key("env") && !o.contains_key("file") {
            return None;
        }
        Some(Self::from_object(o))
    }

    fn from_object(o: &Map<String, Value>) -> Result<SecretRef, String> {
        let mut keys = o.keys();
        let (Some(kind), None) = (keys.next(), keys.next()) else {
            return Err(
                "a secret reference is an object with one key, env or file: {\"env\": \"NAME\"} \
                 or {\"file\": \"/path\"}"
                    .into(),
            );
        };
        let Some(Value::String(s)) = o.get(kind) else {
            return Err(format!("the secret reference's {kind} must be a string"));
        };
        match kind.as_str() {
            "env" => {
                // POSIX names: what a container runtime and Envoy's host_env_keys can carry.
                let valid = !s.is_empty()
                    && !s.starts_with(|c: char| c.is_ascii_digit())
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!(
                        "{s:?} is not an environment variable name (letters, digits, _; not \
                         starting with a digit)"
                    ));
                }
                Ok(SecretRef::Env(s.clone()))
            }
            _ => {
                if !s.starts_with('/') || s.contains('\0') {
                    return Err(format!("secret file {s:?} must be an absolute path"));
                }
                Ok(SecretRef::File(s.clone()))
            }
        }
    }
}

/// A string secret (e.g. a password): a literal string, or a reference whose content is used
/// without one trailing line break (files and `kubectl create secret --from-file` often end in
/// one; no password ends in one). A resolved secret must not be empty: an empty variable is a
/// mistake in the deployment, not a password.
pub fn string(what: &str, v: &Value, resolve: Resolve<'_>) -> Result<String, String> {
    match (v, SecretRef::parse(v)) {
        (Value::String(s), _) => Ok(s.clone()),
        (_, Some(r)) => {
            let r = r.map_err(|e| format!("{what}: {e}"))?;
            let s = resolve(&r).map_err(|e| format!("{what}: {e}"))?;
            let s = strip_line_break(s);
            if s.is_empty() {
                return Err(format!("{what}: {r} is empty"));
            }
            Ok(s)
        }
        (_, None) => Err(format!(
            "{what} must be a string, or {{\"env\": \"NAME\"}} / {{\"file\": \"/path\"}}"
        )),
    }
}

fn strip_line_break(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// The `signing_keys` entries with every reference replaced by the JWKs it holds, each with the
/// name errors about it use: `signing_keys[0]` for an inline JWK, `signing_keys[1] (environment
/// variable K)` for a reference holding one JWK, `signing_keys[1] (environment variable K, key
/// 2)` for the second member of a JWK Set in it.
pub fn expand_keys(
    entries: &[Value],
    resolve: Resolve<'_>,
) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let Some(r) = SecretRef::parse(entry) else {
            out.push((format!("signing_keys[{i}]"), entry.clone()));
            continue;
        };
        let r = r.map_err(|e| format!("signing_keys[{i}]: {e}"))?;
        let text = resolve(&r).map_err(|e| format!("signing_keys[{i}]: {e}"))?;
        // serde_json's errors name a line and column, never the text: no key material leaks.
        let doc: Value = serde_json::from_str(&text).map_err(|e| {
            format!("signing_keys[{i}]: {r} does not hold a JWK or a JWK Set (JSON: {e})")
        })?;
        match doc {
            Value::Object(mut o) if o.contains_key("keys") => {
                let Some(Value::Array(keys)) = o.remove("keys") else {
                    return Err(format!(
                        "signing_keys[{i}]: {r} holds a JWK Set whose keys is not a list"
                    ));
                };
                if keys.is_empty() {
                    return Err(format!("signing_keys[{i}]: {r} holds an empty JWK Set"));
                }
                for (j, k) in keys.into_iter().enumerate() {
                    out.push((format!("signing_keys[{i}] ({r}, key {})", j + 1), k));
                }
            }
            jwk @ Value::Object(_) => out.push((format!("signing_keys[{i}] ({r})"), jwk)),
            _ => {
                return Err(format!(
                    "signing_keys[{i}]: {r} does not hold a JWK or a JWK Set (a JSON object)"
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env_only(
        vars: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&SecretRef) -> Result<String, String> {
        move |r| match r {
            SecretRef::Env(n) => vars
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| (*v).to_string())
                .ok_or_else(|| format!("{r} is not set")),
            SecretRef::File(_) => Err(format!("{r} cannot be read")),
        }
    }

    #[test]
    fn references_are_parsed_strictly() {
        assert_eq!(
            SecretRef::parse(&json!({"env": "OAUTH_EDGE_KEY"})),
            Some(Ok(SecretRef::Env("OAUTH_EDGE_KEY".into())))
        );
        assert_eq!(
            SecretRef::parse(&json!({"file": "/run/secrets/key.json"})),
            Some(Ok(SecretRef::File("/run/secrets/key.json".into())))
        );
        assert_eq!(SecretRef::parse(&json!({"kty": "OKP"})), None);
        assert_eq!(SecretRef::parse(&json!("literal")), None);
        for (bad, needle) in [
            (json!({"env": "A", "file": "/b"}), "one key"),
            (json!({"env": "A", "kty": "OKP"}), "one key"),
            (json!({"env": 1}), "must be a string"),
            (json!({"env": ""}), "not an environment variable name"),
            (json!({"env": "1A"}), "not an environment variable name"),
            (json!({"env": "A=B"}), "not an environment variable name"),
            (json!({"file": "relative/key.json"}), "absolute path"),
        ] {
            let e = SecretRef::parse(&bad).unwrap().unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn string_secrets_literal_or_resolved() {
        let r = env_only(&[("PW", "s3cret\n"), ("CRLF", "pw\r\n"), ("EMPTY", "\n")]);
        assert_eq!(string("p", &json!("lit"), &r).unwrap(), "lit");
        assert_eq!(string("p", &json!({"env": "PW"}), &r).unwrap(), "s3cret");
        assert_eq!(string("p", &json!({"env": "CRLF"}), &r).unwrap(), "pw");
        assert_eq!(
            string("store.etcd.password", &json!({"env": "NOPE"}), &r).unwrap_err(),
            "store.etcd.password: environment variable NOPE is not set"
        );
        assert_eq!(
            string("p", &json!({"env": "EMPTY"}), &r).unwrap_err(),
            "p: environment variable EMPTY is empty"
        );
        assert!(string("p", &json!(5), &r)
            .unwrap_err()
            .contains("must be a string"));
        assert!(string("p", &json!({"file": "/x"}), &r)
            .unwrap_err()
            .starts_with("p: file /x"));
    }

    #[test]
    fn key_references_expand_to_jwks_with_their_names() {
        const JWK: &str = r#"{"kty":"OKP","kid":"a"}"#;
        const SET: &str = r#"{"keys":[{"kid":"b"},{"kid":"c"}]}"#;
        let r = env_only(&[
            ("ONE", JWK),
            ("SET", SET),
            ("BAD", "{\"d\":\"x"),
            ("LIST", "[1]"),
            ("EMPTY_SET", "{\"keys\":[]}"),
        ]);
        let got = expand_keys(
            &[
                json!({"kid": "inline"}),
                json!({"env": "ONE"}),
                json!({"env": "SET"}),
            ],
            &r,
        )
        .unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|(n, k)| (n.as_str(), k["kid"].as_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("signing_keys[0]", "inline"),
                ("signing_keys[1] (environment variable ONE)", "a"),
                ("signing_keys[2] (environment variable SET, key 1)", "b"),
                ("signing_keys[2] (environment variable SET, key 2)", "c"),
            ]
        );
        assert_eq!(
            expand_keys(&[json!({"env": "OAUTH_EDGE_KEY"})], &r).unwrap_err(),
            "signing_keys[0]: environment variable OAUTH_EDGE_KEY is not set"
        );
        let e = expand_keys(&[json!({"env": "BAD"})], &r).unwrap_err();
        assert!(
            e.starts_with("signing_keys[0]: environment variable BAD does not hold a JWK"),
            "{e}"
        );
        assert!(
            !e.contains("\"x"),
            "the secret's text must not be quoted: {e}"
        );
        assert!(expand_keys(&[json!({"env": "LIST"})], &r)
            .unwrap_err()
            .contains("JSON object"));
        assert!(expand_keys(&[json!({"env": "EMPTY_SET"})], &r)
            .unwrap_err()
            .contains("empty JWK Set"));
        assert_eq!(
            expand_keys(&[json!({"file": "/k.json"})], &unavailable).unwrap_err(),
            "signing_keys[0]: file /k.json cannot be read: this host reads no secrets"
        );
    }
}
