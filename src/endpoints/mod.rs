//! One module per endpoint that runs a flow: parse the request, authenticate the client, hand
//! over to the grant or the front-channel logic.

pub mod authorize;
pub mod par;
pub mod refresh;
pub mod token;

use std::rc::Rc;

use crate::client::{valid_client_id, Client};
use crate::client_auth;
use crate::engine;
use crate::error::OAuthError;
use crate::flow::{Ctx, FlowResult};
use crate::form::Form;
use crate::http::Headers;

/// Authenticates the client of a back-channel request (token, PAR) by the one method it used.
pub fn authenticate_client(
    ctx: &mut Ctx<'_>,
    headers: &Headers,
    form: &Form,
) -> FlowResult<Rc<Client>> {
    let presented = client_auth::extract(headers, form)?;
    let failed = || presented.failed("client authentication failed");
    if !valid_client_id(presented.client_id()) {
        return Err(failed().into());
    }
    let lookup = ctx.client(presented.client_id())?;
    let client = engine::found(lookup, failed())?;
    client_auth::authenticate(&client, &presented)?;
    Ok(client)
}

/// The MIME type of a request, lower case, without parameters; `Err` if the header repeats.
pub fn mime(headers: &Headers) -> Result<String, OAuthError> {
    let ct = headers
        .single("content-type")
        .map_err(|_| OAuthError::invalid_request("Content-Type repeated"))?
        .unwrap_or("");
    Ok(ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase())
}

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";
