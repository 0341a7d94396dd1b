//! Prints a new private signing JWK for the plugin configuration's `signing_keys`.
//!
//!     oauth-edge-keygen [--alg EdDSA|ES256] [--kid NAME]
//!
//! `make run` uses it to make the demo key. Keep the output secret: it holds the private key.

use oauth_edge::keys::{generate_jwk, Alg};
use oauth_edge::random::SystemRandom;

fn main() {
    let mut alg = Alg::EdDSA;
    let mut kid: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--alg", Some(v)) if v == "EdDSA" => alg = Alg::EdDSA,
            ("--alg", Some(v)) if v == "ES256" => alg = Alg::ES256,
            ("--kid", Some(v)) if !v.is_empty() => kid = Some(v),
            _ => {
                eprintln!("usage: oauth-edge-keygen [--alg EdDSA|ES256] [--kid NAME]");
                std::process::exit(2);
            }
        }
    }
    let kid = kid.unwrap_or_else(|| {
        let id = oauth_edge::random::token_id(&mut SystemRandom).unwrap_or_default();
        format!(
            "{}-{}",
            alg.as_str().to_ascii_lowercase(),
            id.get(..8).unwrap_or("")
        )
    });
    match generate_jwk(alg, &kid, &mut SystemRandom) {
        Ok(jwk) => println!("{jwk}"),
        Err(e) => {
            eprintln!("oauth-edge-keygen: {e}");
            std::process::exit(1);
        }
    }
}
