//! The short-lived state in etcd, through its v3 JSON gateway (grpc-gateway; etcd ≥ 3.4): how a
//! store operation becomes one HTTP call, and what the answer means. The gateway only
//! dispatches; the [`Session`] (the login token and the leases, one per worker, kept by the
//! engine) decides what must come before an operation and remembers what the answers gave.
//!
//! - `Get` → `POST /v3/kv/range`: the value and its `mod_revision` (the version), or
//!   [`ABSENT`] when there is no such key;
//! - `Cas` at a version → `POST /v3/kv/txn` comparing `mod_revision` (at [`ABSENT`]:
//!   `create_revision == 0`, i.e. create only) and putting the value with a lease; a false
//!   `succeeded` is a lost race (`Conflict`);
//! - `Lease` → `POST /v3/lease/grant`; records expire with their lease, so etcd holds only live
//!   state. Leases are shared: one per lifetime class, reused for a minute (see [`LeaseCache`]);
//! - `Authenticate` → `POST /v3/auth/authenticate`; the token goes into `Authorization`.
//!
//! Anything else — no answer, a 5xx (Envoy's own for a dead member), an unreadable body —
//! is `Failed`: the flow retries once (the next member), then fails closed.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::config::EtcdConfig;
use crate::flow::{SessionOp, StoreOp, StoreResult, ABSENT};
use crate::http::Call;

/// How long a granted lease is used for new writes; it is granted this much longer than its
/// class, so every record it carries outlives its own expiry.
pub const LEASE_REUSE_S: u64 = 60;

/// Lifetime classes: a record needing `t` seconds gets the smallest class ≥ t.
const CLASSES: [u64; 9] = [
    60,
    120,
    300,
    900,
    3_600,
    21_600,
    86_400,
    7 * 86_400,
    90 * 86_400,
];

/// The lease class (seconds) for a record that must live until `expires_at_ms`.
pub fn class_for(expires_at_ms: u64, now_ms: u64) -> u64 {
    let need = expires_at_ms.saturating_sub(now_ms).div_ceil(1000);
    CLASSES
        .iter()
        .copied()
        .find(|c| *c >= need)
        .unwrap_or(90 * 86_400)
}

/// Granted leases per class, per worker.
#[derive(Debug, Default)]
pub struct LeaseCache {
    leases: Vec<(u64, i64, u64)>,
}

impl LeaseCache {
    /// A lease of `class` still fresh enough for a new write.
    pub fn get(&self, class: u64, now_ms: u64) -> Option<i64> {
        self.leases
            .iter()
            .find(|(c, _, granted)| {
                *c == class && now_ms < granted.saturating_add(LEASE_REUSE_S * 1000)
            })
            .map(|(_, id, _)| *id)
    }

    pub fn put(&mut self, class: u64, id: i64, now_ms: u64) {
        self.leases.retain(|(c, _, _)| *c != class);
        self.leases.push((class, id, now_ms));
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The HTTP call for `op`. `lease`: the lease a `Cas` writes with; `token`: the login token.
pub fn call(cfg: &EtcdConfig, op: &StoreOp, lease: Option<i64>, token: Option<&str>) -> Call {
    let key = |k: &str| b64(format!("{}{k}", cfg.prefix).as_bytes());
    let (path, body) = match op {
        StoreOp::Get { key: k } => ("/v3/kv/range", json!({ "key": key(k) })),
        StoreOp::Cas {
            key: k, value, cas, ..
        } => {
            let compare = if *cas == ABSENT {
                json!({"key": key(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
            } else {
                json!({"key": key(k), "target": "MOD", "result": "EQUAL", "mod_revision": cas.to_string()})
            };
            let mut put = json!({"key": key(k), "value": b64(value)});
            if let (Some(id), Some(o)) = (lease, put.as_object_mut()) {
                o.insert("lease".into(), json!(id.to_string()));
            }
            (
                "/v3/kv/txn",
                json!({"compare": [compare], "success": [{"request_put": put}]}),
            )
        }
    };
    post(cfg, path, body, token)
}

/// The HTTP call for a session operation (a login carries no token).
pub fn session_call(cfg: &EtcdConfig, op: &SessionOp, token: Option<&str>) -> Call {
    match op {
        SessionOp::Lease { ttl_s } => post(
            cfg,
            "/v3/lease/grant",
            json!({ "TTL": ttl_s.to_string() }),
            token,
        ),
        SessionOp::Authenticate => {
            let (name, password) = cfg.credentials.clone().unwrap_or_default();
            post(
                cfg,
                "/v3/auth/authenticate",
                json!({"name": name, "password": password}),
                None,
            )
        }
    }
}

fn post(cfg: &EtcdConfig, path: &str, body: serde_json::Value, token: Option<&str>) -> Call {
    let mut headers = vec![
        (":method", "POST".to_string()),
        (":path", path.to_string()),
        (":authority", cfg.authority.clone()),
        ("content-type", "application/json".to_string()),
    ];
    if let Some(t) = token {
        headers.push(("authorization", t.to_string()));
    }
    Call {
        cluster: cfg.cluster.clone(),
        headers,
        timeout: cfg.timeout,
        body: None,
    }
    .with_body(body.to_string().into_bytes())
}

/// What an answer means, and what to remember from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Result(StoreResult),
    Lease(i64),
    Token(String),
    /// The token was refused (expired, etcd restarted): log in again.
    Unauthenticated,
}

/// etcd's JSON encodes 64-bit numbers as strings.
fn num(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// A 200 answer's JSON, or what any other answer means.
fn envelope(status: Option<u16>, body: &[u8]) -> Result<serde_json::Value, Parsed> {
    let failed = Parsed::Result(StoreResult::Failed);
    let Some(status) = status else {
        return Err(failed);
    };
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| failed.clone())?;
    if status == 401 || (status != 200 && is_auth_error(&v)) {
        return Err(Parsed::Unauthenticated);
    }
    if status != 200 {
        return Err(failed);
    }
    Ok(v)
}

pub fn parse(op: &StoreOp, status: Option<u16>, body: &[u8]) -> Parsed {
    let failed = Parsed::Result(StoreResult::Failed);
    let v = match envelope(status, body) {
        Ok(v) => v,
        Err(p) => return p,
    };
    match op {
        StoreOp::Get { .. } => {
            let kv = v.get("kvs").and_then(|k| k.get(0));
            match kv {
                None => Parsed::Result(StoreResult::Value {
                    value: None,
                    cas: ABSENT,
                }),
                Some(kv) => {
                    let rev = num(kv.get("mod_revision"));
                    // An empty value is sent without the member.
                    let value = match kv.get("value").and_then(|x| x.as_str()) {
                        None => Some(Vec::new()),
                        Some(s) => B64.decode(s).ok(),
                    };
                    match (rev, value) {
                        (Some(cas), Some(value)) if cas != ABSENT && cas != 0 => {
                            Parsed::Result(StoreResult::Value {
                                value: Some(value),
                                cas,
                            })
                        }
                        _ => failed,
                    }
                }
            }
        }
        StoreOp::Cas { .. } => {
            if v.get("header").is_none() {
                return failed;
            }
            // grpc-gateway leaves false booleans out.
            if v.get("succeeded").and_then(|s| s.as_bool()) == Some(true) {
                Parsed::Result(StoreResult::Written)
            } else {
                Parsed::Result(StoreResult::Conflict)
            }
        }
    }
}

pub fn parse_session(op: &SessionOp, status: Option<u16>, body: &[u8]) -> Parsed {
    let failed = Parsed::Result(StoreResult::Failed);
    let v = match envelope(status, body) {
        Ok(v) => v,
        Err(p) => return p,
    };
    match op {
        SessionOp::Lease { .. } => match num(v.get("ID")).and_then(|id| i64::try_from(id).ok()) {
            Some(id) if id != 0 => Parsed::Lease(id),
            _ => failed,
        },
        SessionOp::Authenticate => match v.get("token").and_then(|t| t.as_str()) {
            Some(t) if !t.is_empty() => Parsed::Token(t.to_string()),
            _ => failed,
        },
    }
}

/// This worker's session with etcd: the login token (with authentication on) and a lease per
/// lifetime class. What must come before an operation, the operation's call, and what each
/// answer leaves behind.
#[derive(Debug, Default)]
pub struct Session {
    token: Option<String>,
    leases: LeaseCache,
}

impl Session {
    /// What must happen before `op` can be sent: a login (authentication on, no token), then a
    /// lease for a write (none fresh for its lifetime class).
    pub fn prerequisite(&self, cfg: &EtcdConfig, op: &StoreOp, now_ms: u64) -> Option<SessionOp> {
        if cfg.credentials.is_some() && self.token.is_none() {
            return Some(SessionOp::Authenticate);
        }
        if let StoreOp::Cas { expires_at_ms, .. } = op {
            let class = class_for(*expires_at_ms, now_ms);
            if self.leases.get(class, now_ms).is_none() {
                return Some(SessionOp::Lease {
                    ttl_s: class + LEASE_REUSE_S + 5,
                });
            }
        }
        None
    }

    /// The call for a store operation, with the token and, for a write, its class's lease.
    pub fn call(&self, cfg: &EtcdConfig, op: &StoreOp, now_ms: u64) -> Call {
        let lease = match op {
            StoreOp::Cas { expires_at_ms, .. } => {
                self.leases.get(class_for(*expires_at_ms, now_ms), now_ms)
            }
            StoreOp::Get { .. } => None,
        };
        call(cfg, op, lease, self.token.as_deref())
    }

    pub fn session_call(&self, cfg: &EtcdConfig, op: &SessionOp) -> Call {
        session_call(cfg, op, self.token.as_deref())
    }

    /// A store operation's answer; a refused token is forgotten (the next operation logs in).
    pub fn answer(&mut self, op: &StoreOp, status: Option<u16>, body: &[u8]) -> StoreResult {
        match parse(op, status, body) {
            Parsed::Result(r) => r,
            Parsed::Unauthenticated => {
                self.token = None;
                StoreResult::Failed
            }
            // Not answers to a store operation.
            Parsed::Lease(_) | Parsed::Token(_) => StoreResult::Failed,
        }
    }

    /// A session operation's answer, kept: whether it succeeded.
    pub fn session_answer(
        &mut self,
        op: &SessionOp,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> bool {
        match (parse_session(op, status, body), op) {
            (Parsed::Lease(id), SessionOp::Lease { ttl_s }) => {
                let class = ttl_s.saturating_sub(LEASE_REUSE_S + 5);
                self.leases.put(class, id, now_ms);
                true
            }
            (Parsed::Token(t), SessionOp::Authenticate) => {
                self.token = Some(t);
                true
            }
            (Parsed::Unauthenticated, _) => {
                self.token = None;
                false
            }
            _ => false,
        }
    }
}

/// grpc-gateway's error body: `{"error": "...", "code": 16, "message": "..."}`; code 16 is
/// UNAUTHENTICATED, and an expired simple token reads "invalid auth token".
fn is_auth_error(v: &serde_json::Value) -> bool {
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        code: Option<u64>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        error: Option<String>,
    }
    let Ok(e) = serde_json::from_value::<E>(v.clone()) else {
        return false;
    };
    let text = format!(
        "{} {}",
        e.message.unwrap_or_default(),
        e.error.unwrap_or_default()
    );
    e.code == Some(16) || text.contains("invalid auth token") || text.contains("user name is empty")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> EtcdConfig {
        EtcdConfig {
            cluster: "etcd".into(),
            authority: "etcd".into(),
            prefix: "/oe/".into(),
            timeout: Duration::from_millis(500),
            credentials: Some(("oauth-edge".into(), "pw".into())),
        }
    }

    fn body(c: &Call) -> serde_json::Value {
        serde_json::from_slice(c.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn requests() {
        let c = call(&cfg(), &StoreOp::Get { key: "k".into() }, None, Some("tok"));
        assert!(c.headers.contains(&(":path", "/v3/kv/range".into())));
        assert!(c.headers.contains(&("authorization", "tok".into())));
        assert_eq!(body(&c), json!({"key": b64(b"/oe/k")}));
        let create = StoreOp::Cas {
            key: "k".into(),
            value: b"v".to_vec(),
            cas: ABSENT,
            expires_at_ms: 0,
        };
        let b = body(&call(&cfg(), &create, Some(7), None));
        assert_eq!(b["compare"][0]["target"], "CREATE");
        assert_eq!(b["compare"][0]["create_revision"], "0");
        assert_eq!(b["success"][0]["request_put"]["lease"], "7");
        let update = StoreOp::Cas {
            key: "k".into(),
            value: vec![],
            cas: 42,
            expires_at_ms: 0,
        };
        let b = body(&call(&cfg(), &update, None, None));
        assert_eq!(b["compare"][0]["mod_revision"], "42");
        let a = session_call(&cfg(), &SessionOp::Authenticate, Some("old"));
        assert!(!a.headers.iter().any(|(k, _)| *k == "authorization"));
        assert_eq!(body(&a), json!({"name": "oauth-edge", "password": "pw"}));
    }

    #[test]
    fn answers() {
        let get = StoreOp::Get { key: "k".into() };
        assert_eq!(
            parse(&get, Some(200), br#"{"header":{}}"#),
            Parsed::Result(StoreResult::Value {
                value: None,
                cas: ABSENT
            })
        );
        let found = format!(
            r#"{{"header":{{}},"kvs":[{{"key":"x","mod_revision":"9","value":"{}"}}]}}"#,
            b64(b"hi")
        );
        assert_eq!(
            parse(&get, Some(200), found.as_bytes()),
            Parsed::Result(StoreResult::Value {
                value: Some(b"hi".to_vec()),
                cas: 9
            })
        );
        let cas = StoreOp::Cas {
            key: "k".into(),
            value: vec![],
            cas: 1,
            expires_at_ms: 0,
        };
        assert_eq!(
            parse(&cas, Some(200), br#"{"header":{},"succeeded":true}"#),
            Parsed::Result(StoreResult::Written)
        );
        assert_eq!(
            parse(&cas, Some(200), br#"{"header":{}}"#),
            Parsed::Result(StoreResult::Conflict)
        );
        assert_eq!(
            parse_session(
                &SessionOp::Lease { ttl_s: 60 },
                Some(200),
                br#"{"ID":"123","TTL":"60"}"#
            ),
            Parsed::Lease(123)
        );
        assert_eq!(
            parse_session(&SessionOp::Authenticate, Some(200), br#"{"token":"t.1"}"#),
            Parsed::Token("t.1".into())
        );
        assert_eq!(
            parse(
                &get,
                Some(401),
                br#"{"error":"etcdserver: invalid auth token","code":16}"#
            ),
            Parsed::Unauthenticated
        );
        for (status, b) in [
            (None, &b""[..]),
            (Some(503), b"upstream connect error"),
            (Some(200), b"garbage"),
            (Some(500), br#"{"code":14}"#),
        ] {
            assert_eq!(parse(&get, status, b), Parsed::Result(StoreResult::Failed));
        }
    }

    #[test]
    fn lease_classes_and_reuse() {
        assert_eq!(class_for(1_000 + 60_000, 1_000), 60);
        assert_eq!(class_for(1_000 + 61_000, 1_000), 120);
        assert_eq!(class_for(86_400_000, 0), 86_400);
        let mut c = LeaseCache::default();
        c.put(60, 5, 0);
        assert_eq!(c.get(60, 59_999), Some(5));
        assert_eq!(c.get(60, 60_000), None);
        assert_eq!(c.get(120, 0), None);
    }

    fn has_token(c: &Call, t: &str) -> bool {
        c.headers.contains(&("authorization", t.to_string()))
    }

    #[test]
    fn a_session_logs_in_then_leases_then_writes_and_logs_in_again_when_refused() {
        let cfg = cfg();
        let mut s = Session::default();
        let now = 1_000_000;
        let write = StoreOp::Cas {
            key: "k".into(),
            value: vec![],
            cas: ABSENT,
            expires_at_ms: now + 30_000,
        };
        let get = StoreOp::Get { key: "k".into() };
        // Authentication on: a login first, for reads too.
        assert_eq!(
            s.prerequisite(&cfg, &get, now),
            Some(SessionOp::Authenticate)
        );
        let login = s.session_call(&cfg, &SessionOp::Authenticate);
        assert!(!login.headers.iter().any(|(k, _)| *k == "authorization"));
        assert!(!s.session_answer(&SessionOp::Authenticate, Some(503), b"x", now));
        assert_eq!(
            s.prerequisite(&cfg, &get, now),
            Some(SessionOp::Authenticate)
        );
        assert!(s.session_answer(
            &SessionOp::Authenticate,
            Some(200),
            br#"{"token":"t.1"}"#,
            now
        ));
        assert_eq!(s.prerequisite(&cfg, &get, now), None);
        assert!(has_token(&s.call(&cfg, &get, now), "t.1"));
        // A write needs a lease of its lifetime class (60 s), granted a minute longer.
        let lease = SessionOp::Lease {
            ttl_s: 60 + LEASE_REUSE_S + 5,
        };
        assert_eq!(s.prerequisite(&cfg, &write, now), Some(lease.clone()));
        assert!(has_token(&s.session_call(&cfg, &lease), "t.1"));
        assert!(s.session_answer(&lease, Some(200), br#"{"ID":"77"}"#, now));
        assert_eq!(s.prerequisite(&cfg, &write, now), None);
        assert_eq!(
            body(&s.call(&cfg, &write, now))["success"][0]["request_put"]["lease"],
            "77"
        );
        // The lease is reused for a minute, then a new one is asked for.
        let later = now + LEASE_REUSE_S * 1000;
        let write_later = StoreOp::Cas {
            key: "k".into(),
            value: vec![],
            cas: ABSENT,
            expires_at_ms: later + 30_000,
        };
        assert!(matches!(
            s.prerequisite(&cfg, &write_later, later),
            Some(SessionOp::Lease { .. })
        ));
        // etcd forgot the token (restart, expiry): the operation fails, the next logs in.
        let refused = br#"{"error":"etcdserver: invalid auth token","code":16}"#;
        assert_eq!(s.answer(&get, Some(401), refused), StoreResult::Failed);
        assert_eq!(
            s.prerequisite(&cfg, &get, later),
            Some(SessionOp::Authenticate)
        );
    }

    #[test]
    fn without_authentication_reads_need_nothing() {
        let mut cfg = cfg();
        cfg.credentials = None;
        let s = Session::default();
        let get = StoreOp::Get { key: "k".into() };
        assert_eq!(s.prerequisite(&cfg, &get, 0), None);
        assert!(!s
            .call(&cfg, &get, 0)
            .headers
            .iter()
            .any(|(k, _)| *k == "authorization"));
    }
}
