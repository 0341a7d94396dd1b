//! RFC 9728 protected resource metadata: what a client (an MCP client, oauth4webapi, ...) reads
//! to find out which authorization server issues tokens for a resource and how to present them.
//! Served at `/.well-known/oauth-protected-resource` followed by the resource identifier's path
//! (§3), and named in every challenge's `resource_metadata` (§5.1).

use serde_json::{json, Value};

use crate::config::Config;

use super::config::{DpopMode, Route, Scopes};

/// The metadata document of `route`'s resource.
pub fn document(cfg: &Config, route: &Route) -> Value {
    let mut doc = json!({
        "resource": route.resource,
        "authorization_servers": [cfg.issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported":
            cfg.verify_algs.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "dpop_bound_access_tokens_required": route.dpop == DpopMode::Required,
    });
    if let (Some(o), Scopes::All(s) | Scopes::Any(s)) = (doc.as_object_mut(), &route.scopes) {
        o.insert("scopes_supported".into(), json!(s));
    }
    if let (Some(o), Some(n)) = (doc.as_object_mut(), &route.resource_name) {
        o.insert("resource_name".into(), json!(n));
    }
    doc
}
