//! The `durable` command: see and steer the instances of a durable database, through the admin
//! API of the process that runs it (`--url` and a token), or by opening the database directory
//! itself (`--db DIR`) when no process holds it, or as a client of a PostgreSQL database that
//! workers share (`--postgres CONNINFO`). Given only `--db` of a database a process holds,
//! it finds that process's admin server from the URL and token files it wrote there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use durable::Runtime;
use durable::admin::{ApiError, TOKEN_FILE, URL_FILE, view};
use durable::store::StoreError;
use serde_json::{Value, json};

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  failed (server error, unreadable store, …)
  2  bad command line
  3  no such instance or orchestration
  4  refused: the instance is finished, still running, or already being cancelled
  5  bad or missing token
  6  cannot reach the admin server or open the database
  7  bad request (for example an event payload that is not JSON or over the server's size
     limit, or an id or event name `.` or `..`, which no admin API URL can carry)";

/// See and steer durable instances.
#[derive(Debug, Parser)]
#[command(name = "durable", version, after_help = EXIT_CODES)]
struct Cli {
    /// The admin server's base URL (printed by the process that serves it).
    #[arg(long, env = "DURABLE_ADMIN_URL", global = true)]
    url: Option<String>,
    /// The bearer token for --url.
    #[arg(long, env = "DURABLE_ADMIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (default: the token file in --db).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// The database directory: opened directly when no process holds it, else its admin
    /// server is found from the URL and token files the process wrote there.
    #[arg(long, env = "DURABLE_DB", global = true)]
    db: Option<PathBuf>,
    /// A PostgreSQL database that worker processes share (libpq conninfo or `postgresql://`
    /// URL): the command connects to it as a client, runs nothing, and its changes reach the
    /// workers at once.
    #[arg(long, env = "DURABLE_POSTGRES", global = true)]
    postgres: Option<String>,
    /// The PostgreSQL schema of the store (with --postgres).
    #[arg(long, default_value = "durable", global = true)]
    pg_schema: String,
    /// Print JSON (the admin API's) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List instances, one page at a time.
    #[command(after_help = EXIT_CODES)]
    List {
        /// Only this state: running, suspended, completed, failed, cancelled, incompatible,
        /// unregistered.
        #[arg(long)]
        state: Option<String>,
        /// Only this orchestration.
        #[arg(long)]
        orchestration: Option<String>,
        /// Only instances parked at the suspension point with this identity.
        #[arg(long)]
        point: Option<String>,
        /// Only ids containing this text.
        #[arg(long)]
        search: Option<String>,
        /// Start after this id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one instance: state, point, pending command, decoded locals, children.
    #[command(after_help = EXIT_CODES)]
    Show {
        /// The instance id.
        id: String,
    },
    /// Show an orchestration's step graph and how many instances are parked at each point.
    #[command(after_help = EXIT_CODES)]
    Graph {
        /// The orchestration name.
        name: String,
        /// The version (default: the newest registered).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Raise event EVENT for instance ID with a JSON payload (decoded by the waiting
    /// orchestration's type: `true`, `"text"`, `42`, `{"by": "lead"}`).
    #[command(after_help = EXIT_CODES)]
    Raise {
        /// The instance id.
        id: String,
        /// The event name.
        event: String,
        /// The payload, as JSON.
        payload: String,
    },
    /// Request the cancellation of an instance (and of its sub-orchestrations).
    ///
    /// The cancel is recorded at once and applied by a process that runs the orchestration, at
    /// the instance's next suspension point (at once if it waits or is suspended); a step
    /// already running may still complete it. Prints the state seen right after the request.
    #[command(after_help = EXIT_CODES)]
    Cancel {
        /// The instance id.
        id: String,
        /// The reason recorded.
        #[arg(long, default_value = "cancelled from the durable CLI")]
        reason: String,
    },
    /// Suspend an instance at its current suspension point; prints the state seen after.
    #[command(after_help = EXIT_CODES)]
    Suspend {
        /// The instance id.
        id: String,
    },
    /// Resume a suspended instance; says so when it was not suspended, and prints the state
    /// seen after.
    #[command(after_help = EXIT_CODES)]
    Resume {
        /// The instance id.
        id: String,
    },
    /// Delete a finished instance and everything stored for it.
    #[command(after_help = EXIT_CODES)]
    Purge {
        /// The instance id.
        id: String,
    },
}

/// Where the commands go.
enum Backend {
    Http { client: reqwest::Client, url: String, token: String },
    Local(Runtime),
}

/// A failure and its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let code = match e.status {
            404 => 3,
            409 => 4,
            401 => 5,
            400 | 405 | 413 | 422 => 7,
            _ => 1,
        };
        Failure { code, message: e.message }
    }
}

fn failure(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

fn read_trimmed(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| failure(6, format!("cannot read {}: {e}", path.display())))
}

async fn connect(cli: &Cli) -> Result<Backend, Failure> {
    let token = |dir: Option<&Path>| -> Result<String, Failure> {
        if let Some(t) = &cli.token {
            return Ok(t.clone());
        }
        if let Some(f) = &cli.token_file {
            return read_trimmed(f);
        }
        match dir {
            Some(dir) => read_trimmed(&dir.join(TOKEN_FILE)),
            None => Err(failure(
                5,
                "--url needs a token: --token, DURABLE_ADMIN_TOKEN, --token-file, or --db DIR \
                 holding the token file",
            )),
        }
    };
    let http = |url: String, token: String| Backend::Http {
        client: reqwest::Client::new(),
        url: url.trim_end_matches('/').to_owned(),
        token,
    };
    if let Some(url) = &cli.url {
        return Ok(http(url.clone(), token(cli.db.as_deref())?));
    }
    if let Some(conninfo) = &cli.postgres {
        let store = durable_postgres::PgStore::connect_in(conninfo, &cli.pg_schema)
            .map_err(|e| failure(6, format!("cannot connect to PostgreSQL: {e}")))?;
        return Runtime::builder(".")
            .store(std::sync::Arc::new(store))
            .worker(false)
            .open()
            .await
            .map(Backend::Local)
            .map_err(|e| failure(6, format!("cannot open the PostgreSQL store: {e}")));
    }
    let Some(dir) = &cli.db else {
        return Err(failure(
            2,
            "say where the instances are: --url URL (a running process's admin server), --db \
             DIR (a database directory) or --postgres CONNINFO (a shared PostgreSQL database)",
        ));
    };
    if !dir.is_dir() {
        return Err(failure(6, format!("{} is not a database directory", dir.display())));
    }
    match Runtime::open(dir).await {
        Ok(rt) => Ok(Backend::Local(rt)),
        Err(durable::OpenError::Store(StoreError::Locked { .. })) => {
            let url_file = dir.join(URL_FILE);
            if !url_file.exists() {
                return Err(failure(
                    6,
                    format!(
                        "database {} is held by another process that serves no admin API; \
                         start it with the admin server, or stop it",
                        dir.display()
                    ),
                ));
            }
            Ok(http(read_trimmed(&url_file)?, token(Some(dir))?))
        }
        Err(e) => Err(failure(6, format!("cannot open {}: {e}", dir.display()))),
    }
}

impl Backend {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let Backend::Http { client, url, token } = self else {
            return Err(failure(1, "not an HTTP backend"));
        };
        let mut request = client.request(method, format!("{url}{path}")).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| failure(6, format!("cannot reach the admin server at {url}: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| failure(6, format!("the admin server's answer broke off: {e}")))?;
        answer(status, &body)
    }
}

/// The admin server's answer: its JSON when it succeeded; else its `{"error": …}`, or, from a
/// server that answers an error without JSON (an older one, or a proxy), its status and text,
/// either way with the exit code of the status, so that scripts see the same code.
fn answer(status: reqwest::StatusCode, body: &[u8]) -> Result<Value, Failure> {
    let value = serde_json::from_slice::<Value>(body);
    if status.is_success() {
        return value.map_err(|e| {
            failure(1, format!("the admin server answered {status} without JSON: {e}"))
        });
    }
    let message = match value.as_ref().ok().and_then(|v| v["error"].as_str()) {
        Some(error) => error.to_owned(),
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(300).collect();
            if text.is_empty() {
                format!("the admin server answered {status}")
            } else {
                format!("the admin server answered {status}: {text}")
            }
        }
    };
    Err(ApiError::new(status.as_u16(), message).into())
}

/// `text` percent-encoded for a URL path segment or query value.
fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` (an id, an event or orchestration name) as one path segment of an admin API URL, or
/// exit code 7 when no URL can carry it.
///
/// reqwest resolves URLs as browsers do (WHATWG): a `.` segment is removed and a `..` segment
/// removes the one before it, and `%2e` counts as a dot, so no escaping helps: `raise . cancel`
/// would POST to `/api/instances/events/cancel` and cancel instance `events`. Every other text
/// survives [`enc`] unchanged, so these two are refused before anything is sent.
fn segment(what: &str, text: &str) -> Result<String, Failure> {
    if text == "." || text == ".." {
        return Err(failure(
            7,
            format!(
                "{what} `{text}` cannot be sent to the admin server: URLs drop `.` and `..` path \
                 segments, so the request would reach another instance; use --db DIR while no \
                 process holds the database, or --postgres"
            ),
        ));
    }
    Ok(enc(text))
}

async fn run(cli: &Cli, backend: &Backend) -> Result<Value, Failure> {
    use reqwest::Method;
    let local = match backend {
        Backend::Local(rt) => Some(rt),
        Backend::Http { .. } => None,
    };
    match &cli.command {
        Command::List { state, orchestration, point, search, after, limit } => {
            let query = view::ListQuery {
                state: state.clone(),
                orchestration: orchestration.clone(),
                point: point.clone(),
                q: search.clone(),
                after: after.clone(),
                limit: *limit,
            };
            match local {
                Some(rt) => Ok(view::list(rt, &query)?),
                None => {
                    let mut params = Vec::new();
                    for (k, v) in [
                        ("state", state),
                        ("orchestration", orchestration),
                        ("point", point),
                        ("q", search),
                        ("after", after),
                    ] {
                        if let Some(v) = v {
                            params.push(format!("{k}={}", enc(v)));
                        }
                    }
                    if let Some(l) = limit {
                        params.push(format!("limit={l}"));
                    }
                    backend
                        .call(Method::GET, &format!("/api/instances?{}", params.join("&")), None)
                        .await
                }
            }
        }
        Command::Show { id } => match local {
            Some(rt) => Ok(view::describe(rt, id)?),
            None => {
                let path = format!("/api/instances/{}", segment("the id", id)?);
                backend.call(Method::GET, &path, None).await
            }
        },
        Command::Graph { name, version } => match local {
            Some(_) => Err(failure(
                3,
                format!(
                    "the step graph of `{name}` is known only to a process that registers it: \
                     use --url (or --db of a database such a process holds)"
                ),
            )),
            None => {
                let v = version.map(|v| format!("?version={v}")).unwrap_or_default();
                let name = segment("the orchestration name", name)?;
                backend.call(Method::GET, &format!("/api/orchestrations/{name}{v}"), None).await
            }
        },
        Command::Raise { id, event, payload } => {
            let payload: Value = serde_json::from_str(payload)
                .map_err(|e| failure(7, format!("the payload is not JSON ({e}); a text payload is written \"text\", with the quotes")))?;
            match local {
                Some(rt) => {
                    durable::admin::raise_json(rt, id, event, &payload).await?;
                    Ok(json!({"raised": event, "id": id}))
                }
                None => {
                    let path = format!(
                        "/api/instances/{}/events/{}",
                        segment("the id", id)?,
                        segment("the event name", event)?
                    );
                    backend.call(Method::POST, &path, Some(payload)).await
                }
            }
        }
        Command::Cancel { id, reason } => match local {
            Some(rt) => Ok(view::cancel(rt, id, reason).await?),
            None => {
                let path = format!("/api/instances/{}/cancel", segment("the id", id)?);
                backend.call(Method::POST, &path, Some(json!({"reason": reason}))).await
            }
        },
        Command::Suspend { id } => match local {
            Some(rt) => Ok(view::suspend(rt, id).await?),
            None => {
                let path = format!("/api/instances/{}/suspend", segment("the id", id)?);
                backend.call(Method::POST, &path, None).await
            }
        },
        Command::Resume { id } => match local {
            Some(rt) => Ok(view::resume(rt, id).await?),
            None => {
                let path = format!("/api/instances/{}/resume", segment("the id", id)?);
                backend.call(Method::POST, &path, None).await
            }
        },
        Command::Purge { id } => match local {
            Some(rt) => {
                rt.purge(id).await.map_err(ApiError::from)?;
                Ok(json!({"purged": id}))
            }
            None => {
                let path = format!("/api/instances/{}", segment("the id", id)?);
                backend.call(Method::DELETE, &path, None).await
            }
        },
    }
}

/// `text` with the characters a terminal acts on written as visible escapes: control
/// characters (`\n`, `\r`, `\t`, `\x1b`, `\u{9b}`, …), the bidirectional controls that
/// reorder what follows (`\u{202e}`, …) and the line and paragraph separators. Everything else,
/// any script, is unchanged.
///
/// Ids, event names, errors, custom statuses, outputs and locals are anybody's text: printed
/// raw, `\x1b[2J` clears the screen, `\r` or `\n` forges table rows, and U+202E shows what
/// follows reversed.
fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control()
                || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}')
                || matches!(c, '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// A value of the API's JSON as one cell of human output, escaped by [`shown`].
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => shown(s),
        other => shown(&other.to_string()),
    }
}

/// Prints `rows` under `headers`, each column as wide as its widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_human(command: &Command, v: &Value) {
    match command {
        Command::List { .. } => {
            let rows: Vec<Vec<String>> = v["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    vec![
                        cell(&i["id"]),
                        cell(&i["orchestration"]),
                        cell(&i["state"]),
                        cell(&i["point"]["line"]),
                        cell(&i["pending"]),
                        cell(&i["steps"]),
                        cell(&i["updated"]),
                    ]
                })
                .collect();
            table(&["ID", "ORCHESTRATION", "STATE", "LINE", "PENDING", "STEPS", "UPDATED"], &rows);
            if let Some(next) = v["next"].as_str() {
                println!("(more: --after {})", shown(next));
            }
        }
        Command::Show { .. } => {
            let mut rows = Vec::new();
            for key in [
                "id",
                "orchestration",
                "version",
                "state",
                "error",
                "steps",
                "pending",
                "custom_status",
                "output",
                "parent",
                "buffered_events",
                "frame_bytes",
                "created",
                "updated",
            ] {
                if !v[key].is_null() {
                    rows.push(vec![format!("{key}:"), cell(&v[key])]);
                }
            }
            if let Some(p) = v["point"].as_object() {
                rows.push(vec![
                    "point:".into(),
                    format!("{} (line {})", cell(&p["identity"]), cell(&p["line"])),
                ]);
            }
            let children: Vec<String> =
                v["children"].as_array().into_iter().flatten().map(cell).collect();
            if !children.is_empty() {
                rows.push(vec!["children:".into(), children.join(", ")]);
            }
            for row in &rows {
                println!("{:<17}{}", row[0], row[1]);
            }
            print_locals(v, &v["locals"], "");
        }
        Command::Graph { .. } => {
            println!("{} v{}", cell(&v["name"]), cell(&v["version"]));
            let rows: Vec<Vec<String>> = v["points"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        cell(&p["line"]),
                        cell(&p["operation"]),
                        cell(&p["parked"]),
                        cell(&p["identity"]),
                    ]
                })
                .collect();
            table(&["LINE", "OPERATION", "PARKED", "IDENTITY"], &rows);
            println!("edges:");
            for e in v["edges"].as_array().into_iter().flatten() {
                println!("  {} -> {}", cell(&e[0]), cell(&e[1]));
            }
        }
        Command::Raise { id, event, .. } => {
            println!("raised `{}` for {}", shown(event), shown(id));
        }
        Command::Cancel { id, .. } | Command::Suspend { id } | Command::Resume { id } => {
            println!("{}", steered(command, &shown(id), v));
        }
        Command::Purge { id } => println!("purged {}", shown(id)),
    }
}

/// What a cancel, suspend or resume of `id` did, from the states the answer reports (`was`
/// before, `state` after; a server older than this CLI reports neither).
///
/// A cancel is only recorded: it is applied at the instance's next suspension point by a
/// process that runs the orchestration, so "cancelled" would overstate it until the state
/// says so; likewise a resume of an instance that was not suspended did nothing.
fn steered(command: &Command, id: &str, v: &Value) -> String {
    let state = v["state"].as_str().map(shown);
    let was = v["was"].as_str();
    let now = state.as_ref().map(|s| format!(" (it is {s})")).unwrap_or_default();
    match (command, state.as_deref()) {
        (Command::Cancel { .. }, Some("cancelled")) => format!("cancelled {id}"),
        (Command::Cancel { .. }, _) => format!(
            "cancel requested for {id}{now}: a process that runs its orchestration applies it \
             at its next suspension point"
        ),
        (Command::Suspend { .. }, Some("suspended")) if was == Some("suspended") => {
            format!("{id} was already suspended")
        }
        (Command::Suspend { .. }, Some("suspended")) => format!("suspended {id}"),
        (Command::Suspend { .. }, _) => format!("suspend requested for {id}{now}"),
        (Command::Resume { .. }, Some(_)) if was == Some("suspended") => {
            format!("resumed {id}{now}")
        }
        (Command::Resume { .. }, Some(_)) if matches!(was, Some("running" | "scheduled")) => {
            format!("{id} was not suspended{now}")
        }
        _ => format!("resume requested for {id}{now}"),
    }
}

fn print_locals(v: &Value, frame: &Value, indent: &str) {
    if frame.is_null() {
        if !indent.is_empty() {
            return;
        }
        if let Some(e) = v["locals_error"].as_str() {
            println!("locals:          (not decoded: {})", shown(e));
        }
        let stored: Vec<String> = v["stored_locals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| format!("{}: {}", cell(&l["name"]), cell(&l["type"])))
            .collect();
        if !stored.is_empty() {
            println!("stored locals:   {}", stored.join(", "));
        }
        return;
    }
    println!("{indent}locals:");
    for l in frame["locals"].as_array().into_iter().flatten() {
        println!("{indent}  {} = {}", cell(&l["name"]), shown(&l["value"].to_string()));
    }
    if let Some(n) = frame["nested"].as_object() {
        println!("{indent}  in durable function {}:", cell(&n["function"]));
        print_locals(v, &n["frame"], &format!("{indent}    "));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let backend = match connect(&cli).await {
        Ok(b) => b,
        Err(f) => {
            eprintln!("durable: {}", shown(&f.message));
            return ExitCode::from(f.code);
        }
    };
    let result = run(&cli, &backend).await;
    if let Backend::Local(rt) = &backend {
        rt.shutdown().await;
    }
    match result {
        Ok(v) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_human(&cli.command, &v);
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            if cli.json {
                println!("{}", json!({"error": f.message}));
            }
            eprintln!("durable: {}", shown(&f.message));
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the URL the CLI builds for `id` reaches `/api/instances/{id}/cancel`.
    fn reaches_its_instance(id: &str) -> bool {
        let Ok(seg) = segment("the id", id) else { return false };
        let built = format!("/api/instances/{seg}/cancel");
        reqwest::Url::parse(&format!("http://127.0.0.1:1{built}")).is_ok_and(|u| u.path() == built)
    }

    #[test]
    fn only_dot_segments_are_refused_and_every_other_id_keeps_its_url() {
        for id in [".", ".."] {
            assert_eq!(segment("the id", id).map_err(|f| f.code).err(), Some(7), "{id}");
        }
        for id in ["...", ".a", "a.", "%2e", "%2E%2e", "a/..", "\\..", "\t..", " ..", "?#", "é"] {
            assert!(reaches_its_instance(id), "{id:?}");
        }
    }

    #[test]
    fn refusals_without_json_keep_the_exit_code_of_their_status() {
        use reqwest::StatusCode as S;
        let code = |status, body: &[u8]| answer(status, body).map_err(|f| f.code).err();
        // What axum answers without a JSON layer: an empty 405, and plain text.
        assert_eq!(code(S::METHOD_NOT_ALLOWED, b""), Some(7));
        assert_eq!(code(S::PAYLOAD_TOO_LARGE, b"length limit exceeded"), Some(7));
        assert_eq!(code(S::BAD_REQUEST, b"Invalid URL: Cannot parse"), Some(7));
        assert_eq!(code(S::NOT_FOUND, b"<html>not found</html>"), Some(3));
        assert_eq!(code(S::PAYLOAD_TOO_LARGE, br#"{"error": "over the limit"}"#), Some(7));
        assert_eq!(code(S::METHOD_NOT_ALLOWED, br#"{"error": "PUT is not allowed"}"#), Some(7));
        assert_eq!(code(S::OK, b"not json"), Some(1));
        let message =
            answer(S::PAYLOAD_TOO_LARGE, b"length limit exceeded").err().map(|f| f.message);
        assert_eq!(
            message.as_deref(),
            Some("the admin server answered 413 Payload Too Large: length limit exceeded")
        );
    }

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        assert_eq!(shown("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(shown("\x1b[2J\x07\x7f"), "\\x1b[2J\\x07\\x7f");
        assert_eq!(
            shown("\u{9b}31m \u{202e}txt \u{2066} \u{2028}"),
            "\\u{9b}31m \\u{202e}txt \\u{2066} \\u{2028}"
        );
        assert_eq!(
            shown("grüße, 東京, emoji 🎉, back\\slash"),
            "grüße, 東京, emoji 🎉, back\\slash"
        );
    }

    #[test]
    fn steering_says_what_was_recorded_not_more() {
        let cancel = Command::Cancel { id: "x".into(), reason: String::new() };
        let said = |command: &Command, v: Value| steered(command, "x", &v);
        assert_eq!(
            said(&cancel, json!({"cancelled": "x", "state": "running"})),
            "cancel requested for x (it is running): a process that runs its orchestration \
             applies it at its next suspension point"
        );
        assert_eq!(said(&cancel, json!({"cancelled": "x", "state": "cancelled"})), "cancelled x");
        assert!(said(&cancel, json!({"cancelled": "x"})).starts_with("cancel requested for x:"));
        let resume = Command::Resume { id: "x".into() };
        assert_eq!(
            said(&resume, json!({"resumed": "x", "was": "running", "state": "running"})),
            "x was not suspended (it is running)"
        );
        assert_eq!(
            said(&resume, json!({"resumed": "x", "was": "suspended", "state": "running"})),
            "resumed x (it is running)"
        );
        assert_eq!(
            said(&resume, json!({"resumed": "x", "was": "unregistered", "state": "unregistered"})),
            "resume requested for x (it is unregistered)"
        );
        assert_eq!(said(&resume, json!({"resumed": "x"})), "resume requested for x");
        let suspend = Command::Suspend { id: "x".into() };
        assert_eq!(
            said(&suspend, json!({"suspended": "x", "was": "running", "state": "suspended"})),
            "suspended x"
        );
        assert_eq!(
            said(&suspend, json!({"suspended": "x", "was": "suspended", "state": "suspended"})),
            "x was already suspended"
        );
        assert_eq!(
            said(&suspend, json!({"suspended": "x", "was": "completed", "state": "completed"})),
            "suspend requested for x (it is completed)"
        );
    }
}
