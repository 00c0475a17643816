//! Draws a step graph as SVG: one box per suspension point, labelled with its source line, its
//! operation and the number of instances parked there, each a link to those instances.
//!
//! Layout (step machines are mostly chains with a few branches and loops): edges that close a
//! loop (found by a depth-first search from the start) are set aside; every node's rank is its
//! longest distance from the start over the remaining edges; nodes of a rank sit side by side
//! in source order. Forward edges are straight arrows; loop edges curve around the right side.

use std::collections::HashMap;
use std::fmt::Write;

use durable_runtime::{GRAPH_END, GRAPH_START, StepGraph};

use crate::markup::{escape, url_encode};

const W: i64 = 240;
const H: i64 = 54;
const GAP_X: i64 = 40;
const GAP_Y: i64 = 50;
const MARGIN: i64 = 30;

/// The SVG of `graph`, with `parked(identity)` instances shown on each point.
pub(crate) fn draw(graph: &StepGraph, parked: &dyn Fn(&str) -> u64) -> String {
    let mut nodes: Vec<&str> = vec![GRAPH_START];
    nodes.extend(graph.points.iter().map(|p| p.identity.as_str()));
    nodes.push(GRAPH_END);
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<(usize, usize)> = graph
        .edges
        .iter()
        .filter_map(|(a, b)| Some((*index.get(a.as_str())?, *index.get(b.as_str())?)))
        .collect();
    let n = nodes.len();
    let mut out_edges = vec![Vec::new(); n];
    for (i, &(a, b)) in edges.iter().enumerate() {
        out_edges[a].push((b, i));
    }
    // Back edges: those to a node on the depth-first search's current path.
    let mut back = vec![false; edges.len()];
    let mut state = vec![0u8; n]; // 0 new, 1 on the path, 2 done
    let mut stack = vec![(0usize, 0usize)];
    state[0] = 1;
    while let Some(&mut (node, ref mut next)) = stack.last_mut() {
        if let Some(&(to, e)) = out_edges[node].get(*next) {
            *next += 1;
            match state[to] {
                0 => {
                    state[to] = 1;
                    stack.push((to, 0));
                }
                1 => back[e] = true,
                _ => {}
            }
        } else {
            state[node] = 2;
            stack.pop();
        }
    }
    // Longest-path ranks over forward edges (Bellman-Ford style relaxation; the graph is small).
    let mut rank = vec![0usize; n];
    for _ in 0..n {
        let mut changed = false;
        for (i, &(a, b)) in edges.iter().enumerate() {
            if !back[i] && rank[b] < rank[a] + 1 {
                rank[b] = rank[a] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // The end sits below everything.
    let last = (0..n - 1).map(|i| rank[i]).max().unwrap_or(0);
    rank[n - 1] = last + 1;
    let ranks = rank[n - 1] + 1;
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); ranks];
    for (i, r) in rank.iter().enumerate() {
        rows[*r].push(i);
    }
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1);
    let width = i64::try_from(widest).unwrap_or(1) * (W + GAP_X) - GAP_X + 2 * MARGIN + 60;
    let height = i64::try_from(ranks).unwrap_or(1) * (H + GAP_Y) - GAP_Y + 2 * MARGIN;
    let mut pos = vec![(0i64, 0i64); n];
    for (r, row) in rows.iter().enumerate() {
        let count = i64::try_from(row.len()).unwrap_or(1);
        let row_width = count * (W + GAP_X) - GAP_X;
        let x0 = (width - 60 - row_width) / 2;
        for (k, &node) in row.iter().enumerate() {
            let k = i64::try_from(k).unwrap_or(0);
            pos[node] =
                (x0 + k * (W + GAP_X), MARGIN + i64::try_from(r).unwrap_or(0) * (H + GAP_Y));
        }
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="step-graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="step graph of {name}">"#,
        name = escape(&graph.name)
    );
    svg.push_str(r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="dimgray"/></marker></defs>"#);
    for (i, &(a, b)) in edges.iter().enumerate() {
        let (ax, ay) = pos[a];
        let (bx, by) = pos[b];
        if back[i] || by <= ay {
            // Around the right side, from the source's right edge to the target's right edge.
            let (sx, sy, tx, ty) = (ax + W, ay + H / 2, bx + W, by + H / 2);
            let bulge = sx.max(tx) + 50;
            let _ = write!(
                svg,
                r#"<path class="edge back" d="M {sx} {sy} C {bulge} {sy}, {bulge} {ty}, {tx} {ty}" fill="none" stroke="dimgray" marker-end="url(#arrow)"/>"#
            );
        } else {
            let _ = write!(
                svg,
                r#"<line class="edge" x1="{}" y1="{}" x2="{}" y2="{}" stroke="dimgray" marker-end="url(#arrow)"/>"#,
                ax + W / 2,
                ay + H,
                bx + W / 2,
                by
            );
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        if i == 0 || i == n - 1 {
            let _ = write!(
                svg,
                r#"<g class="terminal"><rect x="{x}" y="{y}" width="{W}" height="{H}" rx="27" fill="whitesmoke" stroke="darkgray"/><text x="{}" y="{}" text-anchor="middle">{node}</text></g>"#,
                x + W / 2,
                y + H / 2 + 5
            );
            continue;
        }
        let Some(point) = graph.points.get(i - 1) else { continue };
        let count = parked(&point.identity);
        let href = format!(
            "/instances?orchestration={}&point={}",
            url_encode(&graph.name),
            url_encode(&point.identity)
        );
        let fill = if count > 0 { "cornsilk" } else { "white" };
        let _ = write!(
            svg,
            r#"<a href="{href}" class="point-link"><g class="point" data-point="{id}" data-line="{line}" data-parked="{count}"><title>{id}</title><rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6" fill="{fill}" stroke="darkslategray"/><text x="{tx}" y="{ty1}" text-anchor="middle" class="label">line {line}: {op}</text><text x="{tx}" y="{ty2}" text-anchor="middle" class="parked">{count} parked</text></g></a>"#,
            href = escape(&href),
            id = escape(&point.identity),
            line = point.line,
            op = escape(&shorten(&point.operation, 28)),
            tx = x + W / 2,
            ty1 = y + 22,
            ty2 = y + 42,
        );
    }
    svg.push_str("</svg>");
    svg
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::GraphPoint;

    fn point(id: &str, line: u32) -> GraphPoint {
        GraphPoint {
            identity: id.into(),
            file: "f.rs".into(),
            line,
            operation: "sleep".into(),
            locals: Vec::new(),
        }
    }

    #[test]
    fn one_group_per_point_loops_curve_and_counts_show() {
        let e = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let graph = StepGraph {
            name: "g".into(),
            version: 1,
            points: vec![point("a", 10), point("b", 20)],
            edges: vec![e("start", "a"), e("a", "b"), e("b", "a"), e("b", "end")],
        };
        let svg = draw(&graph, &|id| if id == "b" { 7 } else { 0 });
        assert_eq!(svg.matches(r#"<g class="point""#).count(), 2);
        assert_eq!(svg.matches(r#"class="edge back""#).count(), 1);
        assert_eq!(svg.matches(r#"<line class="edge""#).count(), 3);
        assert!(svg.contains(r#"data-point="b" data-line="20" data-parked="7""#));
        assert!(svg.contains("line 10: sleep"));
        assert!(svg.contains("/instances?orchestration=g&amp;point=b"));
    }
}
