//! The bearer token: generated, kept in a file only its owner can read, checked on every
//! request in constant time; and the browser cookie given in exchange for it, which carries a
//! value derived from the token, never the token itself.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

/// The start of the name of the cookie a browser gets after presenting the token once; the
/// server's port follows, because cookies are not kept apart by port and two admin servers on
/// one host would otherwise replace each other's.
const COOKIE_PREFIX: &str = "durable_admin_";

/// The BLAKE3 key-derivation context of the cookie value: fixed, so the value depends on the
/// token alone, and used for nothing else, so the value is useless anywhere else.
const COOKIE_CONTEXT: &str = "durable-admin 2025 browser cookie for reading";

/// What requests are checked against: the bearer token, and the cookie a browser gets for it.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    token: Arc<str>,
    cookie_name: Arc<str>,
    cookie_value: Arc<str>,
}

impl Keys {
    /// The keys of the server with `token` listening on `port`.
    pub(crate) fn new(token: Arc<str>, port: u16) -> Self {
        Keys {
            cookie_name: format!("{COOKIE_PREFIX}{port}").into(),
            cookie_value: cookie_value(&token).into(),
            token,
        }
    }
}

/// The cookie value for `token`: a key derived from it with BLAKE3, as hex.
///
/// Any service on the same host sees the cookies a browser holds for it, since cookies are not
/// kept apart by port; the value it could learn that way lets it read pages, never change an
/// instance, and does not give away the token (which works as a bearer token for everything).
/// A generated token is 256 random bits, which no one finds from the value; BLAKE3 is no
/// password hash, so a weak token given with `AdminOptions::token` could be guessed from it, as
/// it could be guessed against the server itself.
fn cookie_value(token: &str) -> String {
    blake3::Hasher::new_derive_key(COOKIE_CONTEXT)
        .update(token.as_bytes())
        .finalize()
        .to_hex()
        .to_string()
}

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

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('=')))
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

/// Where a `?token=` request is sent once its cookie is set: `path` with the query `rest`, on
/// this server.
///
/// The request path may start with several slashes, or with backslashes, which browsers read as
/// slashes; as a `Location`, `//evil.example/x` is another host (an open redirect that carries
/// the victim's trust in this server's URL). One slash keeps it a path here.
fn redirect_target(path: &str, rest: &str) -> String {
    let path = path.trim_start_matches(['/', '\\']);
    if rest.is_empty() { format!("/{path}") } else { format!("/{path}?{rest}") }
}

/// Lets a request through with the right bearer token (the token itself, never the cookie
/// value), or, for reading (`GET`/`HEAD`), with the cookie; a `GET` with the right `?token=`
/// gets the cookie and is sent to the same path without the token. Everything else is 401.
pub(crate) async fn require_token(
    State(keys): State<Keys>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let token = &keys.token;
    if bearer(headers).is_some_and(|t| same(t, token)) {
        return next.run(request).await;
    }
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if reading && cookie(headers, &keys.cookie_name).is_some_and(|v| same(v, &keys.cookie_value)) {
        return next.run(request).await;
    }
    let query = request.uri().query().unwrap_or("");
    if let (Some(given), rest) = query_token(query)
        && reading
        && same(given, token)
    {
        let mut response =
            Redirect::to(&redirect_target(request.uri().path(), &rest)).into_response();
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            keys.cookie_name, keys.cookie_value
        );
        if let Ok(value) = cookie.parse() {
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
    fn cookie_is_found_among_others_by_its_whole_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "x=1; durable_admin_80=no; durable_admin_8080=abc; y=2"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(cookie(&h, "durable_admin_8080"), Some("abc"));
        assert_eq!(cookie(&h, "durable_admin_808"), None);
    }

    #[test]
    fn cookie_is_named_for_the_port_and_is_not_the_token() {
        let keys = Keys::new("secret-token".into(), 8080);
        assert_eq!(&*keys.cookie_name, "durable_admin_8080");
        assert_eq!(keys.cookie_value.len(), 64);
        assert!(!keys.cookie_value.contains("secret-token"));
        assert_ne!(keys.cookie_value, Keys::new("secret-tokem".into(), 8080).cookie_value);
    }

    #[test]
    fn redirects_stay_on_this_server() {
        assert_eq!(redirect_target("//evil.example/x", ""), "/evil.example/x");
        assert_eq!(redirect_target("/\\evil.example/x", "a=1"), "/evil.example/x?a=1");
        assert_eq!(redirect_target("///\\/evil.example", ""), "/evil.example");
        assert_eq!(
            redirect_target("/instances/a//b", "state=running"),
            "/instances/a//b?state=running"
        );
        assert_eq!(redirect_target("/", ""), "/");
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
