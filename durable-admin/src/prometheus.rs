//! `/metrics`: what the runtime records through the `metrics` facade (steps, step and commit
//! latency, group-commit batch sizes, activity attempts and failures), rendered by
//! `metrics-exporter-prometheus`, plus the number of instances in each state, counted when
//! scraped.

use std::fmt::Write;
use std::sync::OnceLock;

use durable_runtime::Runtime;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Bucket bounds, in seconds, of the latency histograms.
const SECONDS: &[f64] =
    &[0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Bucket bounds of the group-commit batch sizes.
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder: installed by the first admin server of the process, or
/// `None` when the host application installed another recorder (its metrics go there).
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    SECONDS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "durable_commit_batch_size".into(),
                        ),
                        BATCH,
                    )
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!("not exporting the runtime's metrics on /metrics: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// Installs the process's Prometheus recorder now, unless it is installed already or the
/// application installed another recorder (then `false`).
///
/// The runtime's counters and histograms count from the moment a recorder is installed, and
/// [`serve`](crate::serve) installs it when it starts: steps that ran before it are not in
/// `/metrics`. A process that serves the admin API later than it opens its runtime calls this
/// first.
///
/// ```
/// // Before `Runtime::builder(..).open()`, so the first step is counted.
/// let exporting = durable_admin::install_metrics();
/// # let _ = exporting;
/// ```
pub fn install_metrics() -> bool {
    handle().is_some()
}

/// The scrape text.
pub(crate) fn render(rt: &Runtime) -> String {
    let mut out = handle()
        .map(|h| {
            h.run_upkeep();
            h.render()
        })
        .unwrap_or_default();
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str("# HELP durable_instances Stored instances by state\n");
    out.push_str("# TYPE durable_instances gauge\n");
    match rt.state_counts() {
        Ok(counts) => {
            for state in [
                "scheduled",
                "running",
                "suspended",
                "completed",
                "failed",
                "cancelled",
                "incompatible",
                "unregistered",
            ] {
                let n = counts.get(state).copied().unwrap_or(0);
                let _ = writeln!(out, "durable_instances{{state=\"{state}\"}} {n}");
            }
        }
        Err(e) => tracing::warn!("cannot count instances: {e}"),
    }
    out
}
