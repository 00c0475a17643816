//! Starting and stopping the admin server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use durable_runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth;

/// The name of the file, in the directory given to [`AdminOptions::new`], that holds the token.
pub const TOKEN_FILE: &str = "admin-token";
/// The name of the file, beside [`TOKEN_FILE`], that holds the server's base URL, so that the
/// `durable` CLI given the database directory finds the running server.
pub const URL_FILE: &str = "admin-url";

/// How to serve the admin API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdminOptions {
    /// The address to listen on (default `127.0.0.1:0`: loopback, a free port).
    pub addr: SocketAddr,
    /// The bearer token; generated when `None`.
    pub token: Option<String>,
    /// Where to write [`TOKEN_FILE`] and [`URL_FILE`] (mode 0600): normally the database
    /// directory. `None` writes nothing; the token is then only in [`Admin::token`].
    pub dir: Option<PathBuf>,
}

impl AdminOptions {
    /// Loopback on a free port, a generated token, written to [`TOKEN_FILE`] in `dir` (the
    /// database directory).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            dir: Some(dir.as_ref().to_owned()),
        }
    }

    /// Listens on `addr` instead.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Uses `token` instead of generating one.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// Starting the admin server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The token could not be generated or its file written.
    #[error("cannot write the admin token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A given token is empty or has characters a header or cookie cannot carry.
    #[error("the admin token must be 1 to 256 visible ASCII characters other than `;`")]
    BadToken,
}

/// A running admin server; it stops when [`Admin::stop`] is called or the value is dropped.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    token: Arc<str>,
    token_file: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Admin {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ADDR` (without the token).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The file the token was written to, if any.
    pub fn token_file(&self) -> Option<&Path> {
        self.token_file.as_deref()
    }

    /// Stops listening and waits for the server task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the admin API, `/metrics` and the web view for `rt` on `options.addr`, in a task of
/// the current tokio runtime, until the returned [`Admin`] is stopped or dropped.
///
/// The first server of a process installs the global `metrics` recorder (Prometheus) unless
/// the application installed one; then the runtime's metrics go to the application's recorder
/// and `/metrics` serves only the instance counts.
pub async fn serve(rt: Runtime, options: AdminOptions) -> Result<Admin, ServeError> {
    let _ = crate::prometheus::handle();
    let token: Arc<str> = match options.token {
        Some(t)
            if !t.is_empty()
                && t.len() <= 256
                && t.bytes().all(|b| b.is_ascii_graphic() && b != b';') =>
        {
            t.into()
        }
        Some(_) => return Err(ServeError::BadToken),
        None => auth::generate()
            .map_err(|source| ServeError::Token { path: PathBuf::new(), source })?
            .into(),
    };
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| ServeError::Bind { addr: options.addr, source })?;
    let addr =
        listener.local_addr().map_err(|source| ServeError::Bind { addr: options.addr, source })?;
    let token_file = match &options.dir {
        Some(dir) => {
            let path = dir.join(TOKEN_FILE);
            auth::write_private(&path, &token)
                .map_err(|source| ServeError::Token { path: path.clone(), source })?;
            let url = dir.join(URL_FILE);
            auth::write_private(&url, &format!("http://{addr}\n"))
                .map_err(|source| ServeError::Token { path: url, source })?;
            Some(path)
        }
        None => None,
    };
    let app = router(rt, auth::Keys::new(token.clone(), addr.port()));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("admin server stopped: {e}");
        }
    });
    Ok(Admin { addr, token, token_file, stop: Some(stop), task: Some(task) })
}

fn router(rt: Runtime, keys: auth::Keys) -> Router {
    crate::api::routes()
        .merge(crate::web::routes())
        .fallback(|| async { crate::ApiError::not_found("no such page or endpoint") })
        .with_state(rt)
        .layer(axum::middleware::from_fn_with_state(keys, auth::require_token))
}
