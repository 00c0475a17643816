//! The bearer token: generated, kept in a file only its owner can read, checked on every
//! request in constant time.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

/// The name of the cookie a browser gets after presenting the token once.
pub(crate) const COOKIE: &str = "durable_admin";

/// A new random token: 32 bytes from the operating system, as hex.
pub(crate) fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to `path`, readable and writable by its owner only (0600), replacing it
/// atomically.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('=')))
}

/// `?token=` in a query string, and the query string without it.
fn query_token(query: &str) -> (Option<&str>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("token=") {
            Some(t) => token = Some(t),
            None => rest.push(pair),
        }
    }
    (token, rest.join("&"))
}

/// Lets a request through with the right bearer token, or, for reading (`GET`/`HEAD`), with
/// the cookie; a `GET` with the right `?token=` gets the cookie and is sent to the same URL
/// without the token. Everything else is 401.
pub(crate) async fn require_token(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if bearer(headers).is_some_and(|t| same(t, &token)) {
        return next.run(request).await;
    }
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if reading && cookie(headers).is_some_and(|t| same(t, &token)) {
        return next.run(request).await;
    }
    let query = request.uri().query().unwrap_or("");
    if let (Some(given), rest) = query_token(query)
        && reading
        && same(given, &token)
    {
        let path = request.uri().path();
        let to = if rest.is_empty() { path.to_owned() } else { format!("{path}?{rest}") };
        let mut response = Redirect::to(&to).into_response();
        if let Ok(value) = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/").parse() {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({
            "error": "a valid token is required: send `Authorization: Bearer <token>`, or open \
                      the page once with `?token=<token>` (the token is in the admin token file)"
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token_is_taken_out_of_the_query() {
        assert_eq!(query_token("a=1&token=xyz&b=2"), (Some("xyz"), "a=1&b=2".to_owned()));
        assert_eq!(query_token("a=1"), (None, "a=1".to_owned()));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "x=1; durable_admin=abc; y=2".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(cookie(&h), Some("abc"));
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() -> std::io::Result<()> {
        let (a, b) = (generate()?, generate()?);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        Ok(())
    }
}
