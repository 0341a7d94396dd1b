//! The core's view of an HTTP exchange: what the gateway hands in and what it sends back.
//! Nothing here knows about proxy-wasm.

/// What an answer meant, so the gateway can count it without parsing the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Tokens were issued for this grant type.
    Issued(&'static str),
    /// An OAuth error was answered.
    Error(crate::error_code::ErrorCode),
    /// A document (metadata, JWKS) was served.
    Served,
    /// A request to a protected route goes on to the upstream (see [`Response::forward`]).
    Forwarded,
}

/// What the upstream gets from a request that passed a protected route's checks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forward {
    /// Request headers to remove first (client-sent copies of the claim headers; the
    /// credentials, when the route keeps them).
    pub remove: Vec<String>,
    /// Request headers to set.
    pub set: Vec<(String, String)>,
    /// Filter state for the filters after this one (Envoy's RBAC `filter_state` matcher, access
    /// logs): `wasm.<key>` in Envoy.
    pub state: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub outcome: Outcome,
    /// Set for [`Outcome::Forwarded`]: nothing is answered, the request goes on.
    pub forward: Option<Box<Forward>>,
    /// Why an internal failure happened, for the operator's log only (never sent).
    pub cause: Option<std::borrow::Cow<'static, str>>,
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>, outcome: Outcome) -> Self {
        Response {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body,
            outcome,
            forward: None,
            cause: None,
        }
    }

    /// Not an answer: the request goes on to the upstream, changed as `f` says.
    pub fn forward(f: Forward) -> Self {
        Response {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
            outcome: Outcome::Forwarded,
            forward: Some(Box::new(f)),
            cause: None,
        }
    }

    /// RFC 6749 §5.1: token and error answers must not be cached.
    pub fn no_store(&mut self) {
        self.headers.push(("cache-control", "no-store".to_string()));
        self.headers.push(("pragma", "no-cache".to_string()));
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Request headers as the host gave them (names lower case, as HTTP/2 and Envoy present them).
/// Kept as a list so a header sent twice is seen twice.
#[derive(Debug, Clone, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// All values of a header.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The single value of a header; `Err(())` when it was sent more than once.
    #[allow(clippy::result_unit_err)]
    pub fn single<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, ()> {
        let mut it = self.all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(());
        }
        Ok(first)
    }
}

/// A call for the gateway to dispatch to an Envoy cluster (`dispatch_http_call`): the registry,
/// a jwks_uri, etcd, the password grant's credential service.
#[derive(Clone, PartialEq, Eq)]
pub struct Call {
    pub cluster: String,
    pub headers: Vec<(&'static str, String)>,
    pub timeout: std::time::Duration,
    pub body: Option<Vec<u8>>,
}

impl Call {
    pub fn with_body(mut self, body: Vec<u8>) -> Call {
        self.body = Some(body);
        self
    }
}

// A body may hold credentials (the password grant, etcd's login): never printed.
impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self
            .headers
            .iter()
            .find(|(k, _)| *k == ":path")
            .map_or("", |(_, v)| v.as_str());
        write!(
            f,
            "Call({} {path}, {} body bytes)",
            self.cluster,
            self.body.as_ref().map_or(0, Vec::len)
        )
    }
}
