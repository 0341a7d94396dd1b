//! [`ConfigError`]: what is wrong with the configuration, and which field it is. `on_configure`
//! logs its `Display` (the sentence operators read, unchanged from the plain-string errors it
//! replaced); tests and tools read [`ConfigError::field`].

use std::fmt;

/// A configuration refused: the field at fault and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's dotted path as written in the configuration (`store.etcd.timeout`,
    /// `clients[2]`, `signing_keys[0]`); empty when the document as a whole is at fault (not
    /// JSON, an unknown key: serde names those in the problem).
    pub field: String,
    /// What is wrong, without the field.
    pub problem: String,
    join: Join,
}

/// How `Display` puts field and problem together, so every message reads as it always did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// "`field` must be ...".
    Sentence,
    /// "`field`: problem" (a problem found by another module, or a parse error).
    Colon,
    /// The problem alone: it names the field already (a secret reference's entry and variable,
    /// a path "used twice").
    Alone,
}

impl ConfigError {
    /// `field` followed by a predicate: `ConfigError::new("limits.max_body_bytes", "must be
    /// between 256 and 1048576")`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
            join: Join::Sentence,
        }
    }

    /// `field: problem`, for a problem another module found in the field's value.
    pub fn at(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
            join: Join::Colon,
        }
    }

    /// A whole message that names the field itself (shown as is).
    pub fn message(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            problem: message.into(),
            join: Join::Alone,
        }
    }

    /// A message from a module that validates a whole section and starts its messages with
    /// the field (`mtls.source ...`, `signing_keys[1] (environment variable B): ...`): the field
    /// is that leading path when it lies in `section`, else the section.
    pub fn within(section: &str, message: String) -> ConfigError {
        let lead = message
            .split([' ', ':', '('])
            .next()
            .unwrap_or_default()
            .trim_end_matches(',');
        let field = if lead.starts_with(section)
            && lead
                .get(section.len()..)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        {
            lead.to_string()
        } else {
            section.to_string()
        };
        ConfigError::message(field, message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.join {
            Join::Sentence if !self.field.is_empty() => {
                write!(f, "{} {}", self.field, self.problem)
            }
            Join::Colon if !self.field.is_empty() => write!(f, "{}: {}", self.field, self.problem),
            _ => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_sentences() {
        let e = ConfigError::new("store.etcd.timeout", "must be between 1ms and 10s");
        assert_eq!(
            e.to_string(),
            "store.etcd.timeout must be between 1ms and 10s"
        );
        let e = ConfigError::at("clients[0]", "redirect_uri is unknown");
        assert_eq!(e.to_string(), "clients[0]: redirect_uri is unknown");
        let e = ConfigError::within("signing_keys", "signing_keys[1] (x): y".into());
        assert_eq!(
            (e.field.as_str(), e.to_string().as_str()),
            ("signing_keys[1]", "signing_keys[1] (x): y")
        );
        let e = ConfigError::within("mtls", "mtls.source must be xfcc".into());
        assert_eq!(e.field, "mtls.source");
        let e = ConfigError::within("mtls", "a certificate is needed".into());
        assert_eq!(e.field, "mtls");
        let e = ConfigError::within("user", "userinfo.x bad".into());
        assert_eq!(e.field, "user");
    }
}
