//! Where the store connects and how it names its streams.

use std::time::Duration;

use userstate::StoreError;

/// The namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "userstate";

/// The longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// How to reach KurrentDB / EventStoreDB and which of its streams belong to this deployment.
///
/// ```
/// use userstate_eventstoredb::EsdbConfig;
/// let config = EsdbConfig::from_url("esdb://db.internal:2113?tls=false&namespace=tenantA").unwrap();
/// assert_eq!(config.namespace(), "tenantA");
/// assert_eq!(config.connection_string(), "esdb://db.internal:2113?tls=false");
/// ```
#[derive(Clone, Debug)]
pub struct EsdbConfig {
    connection_string: String,
    namespace: String,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl EsdbConfig {
    /// Reads a connection string of the `kurrentdb` client (`esdb://`, `esdb+discover://`,
    /// `kurrentdb://`, `kurrentdb+discover://`, `kurrent://`, `kdb://` with the client's
    /// query parameters such as `tls=false`), plus our own optional `namespace=NAME` parameter
    /// (see [`EsdbConfig::namespace`]), which is removed before the client sees the string.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut namespace = DEFAULT_NAMESPACE.to_string();
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if k.eq_ignore_ascii_case("namespace") => namespace = v.to_string(),
                _ => kept.push(pair),
            }
        }
        let connection_string = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        connection_string
            .parse::<kurrentdb::ClientSettings>()
            .map_err(|e| {
                StoreError::InvalidArgument(format!("invalid KurrentDB connection string: {e}"))
            })?;
        Self {
            connection_string,
            namespace: String::new(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
        .with_namespace(namespace)
    }

    /// Uses `namespace` for the stream names (see [`EsdbConfig::namespace`]).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Result<Self, StoreError> {
        let namespace = namespace.into();
        validate_namespace(&namespace)?;
        self.namespace = namespace;
        Ok(self)
    }

    /// Sets the backoff between attempts to build a new client after the old one died:
    /// it starts at `min` and doubles up to `max`.
    pub fn with_reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min.max(Duration::from_millis(1));
        self.reconnect_max = max.max(self.reconnect_min);
        self
    }

    /// The connection string handed to the `kurrentdb` client.
    pub fn connection_string(&self) -> &str {
        &self.connection_string
    }

    /// The namespace: every stream of this store is named `{namespace}-{stream id}` and only
    /// streams with the prefix `{namespace}-` are read from `$all`. It is also the stream
    /// category KurrentDB's `$by_category` projection derives (`$ce-{namespace}`).
    /// Non-empty, at most 64 bytes, no `-`, no control characters, not starting with `$`, not
    /// ending in `.keys`; since it holds no `-`, two namespaces never share a prefix, and the
    /// key streams (`{namespace}.keys-…`, `src/keys.rs`) are in no namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The first delay before rebuilding a dead client.
    pub fn reconnect_min(&self) -> Duration {
        self.reconnect_min
    }

    /// The longest delay before rebuilding a dead client.
    pub fn reconnect_max(&self) -> Duration {
        self.reconnect_max
    }
}

fn validate_namespace(ns: &str) -> Result<(), StoreError> {
    let ok = !ns.is_empty()
        && ns.len() <= MAX_NAMESPACE_LEN
        && !ns.starts_with('$')
        && !ns.contains('-')
        && !ns.ends_with(crate::keys::KEYS_SUFFIX)
        && !ns.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "namespace {ns:?} must be 1 to {MAX_NAMESPACE_LEN} bytes, without '-' or control \
             characters, must not start with '$' and must not end in '.keys' (the key streams \
             of namespace NAME are NAME.keys-…)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_comes_out_of_the_url() {
        let c = EsdbConfig::from_url("kurrentdb://h:2113?namespace=ns1&tls=false").unwrap();
        assert_eq!(c.namespace(), "ns1");
        assert_eq!(c.connection_string(), "kurrentdb://h:2113?tls=false");
        let d = EsdbConfig::from_url("esdb://h:2113").unwrap();
        assert_eq!(d.namespace(), DEFAULT_NAMESPACE);
        assert_eq!(d.connection_string(), "esdb://h:2113");
    }

    #[test]
    fn bad_namespaces_and_urls_are_refused() {
        for ns in ["", "a-b", "$sys", "x\ny", &"n".repeat(65), "userstate.keys"] {
            assert!(EsdbConfig::from_url("esdb://h:2113")
                .unwrap()
                .with_namespace(ns)
                .is_err());
        }
        assert!(EsdbConfig::from_url("http://nope").is_err());
    }
}
