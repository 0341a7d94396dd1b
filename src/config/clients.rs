//! `clients`: the static clients declared in the configuration (see [`crate::client`]), with
//! the checks that need the rest of the configuration (signing keys, mutual TLS).

use std::collections::HashMap;
use std::rc::Rc;

use serde_json::Value;

use super::ConfigError;
use crate::client::Client;
use crate::keys::KeySet;

/// The clients by id. `keys`: an ID token algorithm a client asks for must have a key;
/// `mtls`: IP and email SANs need the whole certificate.
pub(super) fn build(
    raw: &[Value],
    keys: &KeySet,
    mtls: Option<&crate::mtls::Mtls>,
) -> Result<HashMap<String, Rc<Client>>, ConfigError> {
    let mut clients = HashMap::new();
    for (i, c) in raw.iter().enumerate() {
        let field = format!("clients[{i}]");
        let client = Client::from_json(c, true).map_err(|e| ConfigError::at(&field, e))?;
        if let Some(alg) = client.id_token_alg {
            if keys.signer_for(alg).is_none() {
                return Err(ConfigError::at(
                    field,
                    format!(
                        "id_token_signed_response_alg {} needs a signing key of that algorithm",
                        alg.as_str()
                    ),
                ));
            }
        }
        // Envoy's connection attributes show no IP or email SAN: only a certificate read
        // whole (XFCC `Cert`) has them.
        if matches!(
            client.tls_client_name,
            Some(crate::mtls::TlsClientName::SanIp(_) | crate::mtls::TlsClientName::SanEmail(_))
        ) && mtls.is_none_or(|m| m.source != crate::mtls::CertSource::Xfcc)
        {
            return Err(ConfigError::at(
                field,
                "tls_client_auth_san_ip and _san_email need mtls.source xfcc with the certificate (Cert): Envoy shows wasm filters no IP or email SAN",
            ));
        }
        if clients.contains_key(&client.client_id) {
            return Err(ConfigError::at(
                field,
                format!("client_id {:?} is used twice", client.client_id),
            ));
        }
        clients.insert(client.client_id.clone(), Rc::new(client));
    }
    Ok(clients)
}
