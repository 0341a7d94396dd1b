//! A stand-in for etcd's v3 JSON gateway in native tests: it reads the very requests the engine
//! builds (`Engine::store_call`) and answers as etcd does (revisions as strings, base64 keys and
//! values, `succeeded` left out when false, leases that drop their keys). Several engines
//! sharing one are several gateway replicas sharing one etcd. The real etcd runs in the
//! integration tests.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use oauth_edge::http::Call;

#[derive(Default)]
pub struct FakeEtcd {
    /// key → (value, create_revision, mod_revision, lease)
    kv: HashMap<String, (Vec<u8>, u64, u64, i64)>,
    revision: u64,
    leases: HashMap<i64, u64>,
    next_lease: i64,
    pub token: Option<String>,
    pub requests: usize,
    /// When set, every request fails as a dead member would (Envoy's 503).
    pub down: bool,
    /// Require this user and password (etcd auth enabled).
    pub auth: Option<(String, String)>,
}

impl FakeEtcd {
    /// Lease expiry: etcd deletes every key attached to an expired lease.
    pub fn expire(&mut self, now_s: u64) {
        let dead: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, exp)| **exp <= now_s)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.leases.remove(&id);
            self.kv.retain(|_, (_, _, _, l)| *l != id);
        }
    }

    /// Writes a key as another client of etcd would (no lease).
    pub fn put(&mut self, key: &str, value: &[u8]) {
        self.revision += 1;
        self.kv.insert(
            key.to_string(),
            (value.to_vec(), self.revision, self.revision, 0),
        );
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key).map(|(v, _, _, _)| v.clone())
    }

    pub fn keys(&self) -> usize {
        self.kv.len()
    }

    pub fn handle(&mut self, call: &Call, now_s: u64) -> (Option<u16>, Vec<u8>) {
        self.requests += 1;
        if self.down {
            return (Some(503), b"upstream connect error".to_vec());
        }
        self.expire(now_s);
        let path = call
            .headers
            .iter()
            .find(|(k, _)| *k == ":path")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let body: Value = serde_json::from_slice(call.body.as_deref().unwrap_or(b"{}")).unwrap();
        let authz = call
            .headers
            .iter()
            .find(|(k, _)| *k == "authorization")
            .map(|(_, v)| v.clone());
        if path == "/v3/auth/authenticate" {
            let ok = self
                .auth
                .as_ref()
                .is_some_and(|(u, p)| body["name"] == *u && body["password"] == *p);
            if !ok {
                return (Some(400), br#"{"error":"etcdserver: authentication failed, invalid user ID or password","code":3}"#.to_vec());
            }
            let t = format!("tok.{}", self.revision);
            self.token = Some(t.clone());
            return (
                Some(200),
                json!({"header": {}, "token": t}).to_string().into_bytes(),
            );
        }
        if self.auth.is_some() && (authz.is_none() || authz != self.token) {
            return (
                Some(401),
                br#"{"error":"etcdserver: invalid auth token","code":16}"#.to_vec(),
            );
        }
        let key = |v: &Value| String::from_utf8(B64.decode(v.as_str().unwrap()).unwrap()).unwrap();
        let header = json!({"revision": self.revision.to_string()});
        match path {
            "/v3/kv/range" => {
                let k = key(&body["key"]);
                let out = match self.kv.get(&k) {
                    None => json!({"header": header}),
                    Some((v, c, m, _)) => json!({"header": header, "kvs": [{
                        "key": body["key"], "create_revision": c.to_string(),
                        "mod_revision": m.to_string(), "value": B64.encode(v)}], "count": "1"}),
                };
                (Some(200), out.to_string().into_bytes())
            }
            "/v3/kv/txn" => {
                let cmp = &body["compare"][0];
                let k = key(&cmp["key"]);
                let cur = self.kv.get(&k);
                let ok = match cmp["target"].as_str().unwrap() {
                    "CREATE" => cur.is_none(),
                    "MOD" => cur.is_some_and(|(_, _, m, _)| {
                        m.to_string() == cmp["mod_revision"].as_str().unwrap()
                    }),
                    _ => false,
                };
                if !ok {
                    return (
                        Some(200),
                        json!({"header": header}).to_string().into_bytes(),
                    );
                }
                let put = &body["success"][0]["request_put"];
                let lease: i64 = put["lease"].as_str().map_or(0, |l| l.parse().unwrap());
                if lease != 0 && !self.leases.contains_key(&lease) {
                    return (
                        Some(400),
                        br#"{"error":"etcdserver: requested lease not found","code":5}"#.to_vec(),
                    );
                }
                self.revision += 1;
                let create = cur.map_or(self.revision, |(_, c, _, _)| *c);
                let v = B64.decode(put["value"].as_str().unwrap_or("")).unwrap();
                self.kv.insert(k, (v, create, self.revision, lease));
                (
                    Some(200),
                    json!({"header": header, "succeeded": true})
                        .to_string()
                        .into_bytes(),
                )
            }
            "/v3/lease/grant" => {
                self.next_lease += 1;
                let ttl: u64 = body["TTL"].as_str().unwrap().parse().unwrap();
                self.leases.insert(self.next_lease, now_s + ttl);
                (Some(200), json!({"header": header, "ID": self.next_lease.to_string(), "TTL": ttl.to_string()}).to_string().into_bytes())
            }
            _ => (Some(404), b"{}".to_vec()),
        }
    }
}
