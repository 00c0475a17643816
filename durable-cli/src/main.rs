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
  7  bad request (for example an event payload that is not JSON)";

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
    /// Cancel an instance (and its sub-orchestrations).
    #[command(after_help = EXIT_CODES)]
    Cancel {
        /// The instance id.
        id: String,
        /// The reason recorded.
        #[arg(long, default_value = "cancelled from the durable CLI")]
        reason: String,
    },
    /// Suspend an instance at its current suspension point.
    #[command(after_help = EXIT_CODES)]
    Suspend {
        /// The instance id.
        id: String,
    },
    /// Resume a suspended instance.
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
            400 | 413 | 422 => 7,
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
        let status = response.status().as_u16();
        let value: Value = response.json().await.map_err(|e| {
            failure(1, format!("the admin server answered {status} without JSON: {e}"))
        })?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let message = value["error"].as_str().unwrap_or("request refused").to_owned();
            Err(ApiError::new(status, message).into())
        }
    }
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
            None => backend.call(Method::GET, &format!("/api/instances/{}", enc(id)), None).await,
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
                backend
                    .call(Method::GET, &format!("/api/orchestrations/{}{v}", enc(name)), None)
                    .await
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
                    backend
                        .call(
                            Method::POST,
                            &format!("/api/instances/{}/events/{}", enc(id), enc(event)),
                            Some(payload),
                        )
                        .await
                }
            }
        }
        Command::Cancel { id, reason } => match local {
            Some(rt) => {
                rt.cancel(id, reason).await.map_err(ApiError::from)?;
                Ok(json!({"cancelled": id, "reason": reason}))
            }
            None => {
                backend
                    .call(
                        Method::POST,
                        &format!("/api/instances/{}/cancel", enc(id)),
                        Some(json!({"reason": reason})),
                    )
                    .await
            }
        },
        Command::Suspend { id } => match local {
            Some(rt) => {
                rt.suspend(id).await.map_err(ApiError::from)?;
                Ok(json!({"suspended": id}))
            }
            None => {
                backend
                    .call(Method::POST, &format!("/api/instances/{}/suspend", enc(id)), None)
                    .await
            }
        },
        Command::Resume { id } => match local {
            Some(rt) => {
                rt.resume(id).await.map_err(ApiError::from)?;
                Ok(json!({"resumed": id}))
            }
            None => {
                backend
                    .call(Method::POST, &format!("/api/instances/{}/resume", enc(id)), None)
                    .await
            }
        },
        Command::Purge { id } => match local {
            Some(rt) => {
                rt.purge(id).await.map_err(ApiError::from)?;
                Ok(json!({"purged": id}))
            }
            None => {
                backend.call(Method::DELETE, &format!("/api/instances/{}", enc(id)), None).await
            }
        },
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
                println!("(more: --after {next})");
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
        Command::Raise { id, event, .. } => println!("raised `{event}` for {id}"),
        Command::Cancel { id, .. } => println!("cancelled {id}"),
        Command::Suspend { id } => println!("suspended {id}"),
        Command::Resume { id } => println!("resumed {id}"),
        Command::Purge { id } => println!("purged {id}"),
    }
}

fn print_locals(v: &Value, frame: &Value, indent: &str) {
    if frame.is_null() {
        if !indent.is_empty() {
            return;
        }
        if let Some(e) = v["locals_error"].as_str() {
            println!("locals:          (not decoded: {e})");
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
        println!("{indent}  {} = {}", cell(&l["name"]), l["value"]);
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
            eprintln!("durable: {}", f.message);
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
            eprintln!("durable: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
