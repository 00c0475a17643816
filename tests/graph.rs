//! What the macro tells people: each orchestration's step graph (points, stored locals with
//! their types, control-flow edges) and the locals of a frame decoded with their real types.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::time::Duration;

use durable::__support_v1::{Resume, StepResult, codec, detached_ctx};
use durable::{ActivityContext, Ctx, Failure, Orchestration, activity, durable_fn, orchestration};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[activity]
async fn price(_ctx: ActivityContext, item: String) -> Result<u64, String> {
    Ok(item.len() as u64)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: String,
    items: Vec<String>,
}

#[orchestration]
async fn checkout(ctx: Ctx, order: Order) -> Result<u64, Failure> {
    let mut total = 0;
    for item in order.items.clone() {
        total += ctx.call(price, item).await?;
    }
    if total > 100 {
        let ok: bool = ctx.wait_event("approval").await?;
        if !ok {
            return Err(Failure::new("refused"));
        }
    } else {
        ctx.sleep(Duration::from_secs(1)).await;
    }
    let parts =
        ctx.join(vec![ctx.call(price, order.id.clone()), ctx.call(price, "fee".into())]).await;
    Ok(total + parts.into_iter().map(|p| p.unwrap_or(0)).sum::<u64>())
}

fn edges(o: &impl Orchestration) -> Vec<(String, String)> {
    let mut e = o.graph().edges;
    e.sort();
    e
}

#[test]
fn the_graph_of_loops_branches_and_joins() {
    let g = checkout().graph();
    assert_eq!((g.name.as_str(), g.version), ("checkout", 1));
    let ids: Vec<&str> = g.points.iter().map(|p| p.identity.as_str()).collect();
    assert_eq!(ids, ["for0/call(price)#0", "if0/then/wait_event#0", "if0/else/sleep#0", "join#0"]);
    let ops: Vec<&str> = g.points.iter().map(|p| p.operation.as_str()).collect();
    assert_eq!(ops, ["call(price)", "wait_event", "sleep", "join"]);
    assert!(g.points.iter().all(|p| p.file.ends_with("graph.rs") && p.line > 20));
    let locals: Vec<(&str, &str)> =
        g.points[1].locals.iter().map(|l| (l.name.as_str(), l.ty.as_str())).collect();
    assert_eq!(locals, [("order", "graph::Order"), ("total", "u64")]);
    let mut expected: Vec<(String, String)> = [
        ("start", "for0/call(price)#0"),
        ("start", "if0/then/wait_event#0"),
        ("start", "if0/else/sleep#0"),
        ("for0/call(price)#0", "for0/call(price)#0"),
        ("for0/call(price)#0", "if0/then/wait_event#0"),
        ("for0/call(price)#0", "if0/else/sleep#0"),
        ("for0/call(price)#0", "end"),
        ("if0/then/wait_event#0", "join#0"),
        ("if0/then/wait_event#0", "end"),
        ("if0/else/sleep#0", "join#0"),
        ("join#0", "end"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    expected.sort();
    assert_eq!(edges(&checkout()), expected);
}

#[durable_fn]
async fn total_of(ctx: &Ctx, items: Vec<String>) -> Result<u64, Failure> {
    let mut sum = 0;
    for item in items {
        sum += ctx.call(price, item).await?;
    }
    Ok(sum)
}

#[orchestration]
async fn quote(ctx: Ctx, label: String, items: Vec<String>) -> Result<String, Failure> {
    let sum = total_of(&ctx, items).await?;
    Ok(format!("{label}: {sum}"))
}

/// Runs the first step of `o` and returns the frame it parked with.
fn first_frame<O: Orchestration>(o: &O, input: &O::Input) -> durable::__support_v1::Frame {
    let bytes = codec::encode(input).unwrap();
    match o.step(&detached_ctx(), Resume::Start(&bytes)) {
        StepResult::Suspend { frame, .. } => frame,
        other => panic!("did not park: {other:?}"),
    }
}

#[test]
fn a_frame_renders_its_locals_as_json_with_their_types() {
    let order = Order { id: "INV-acme-42".into(), items: vec!["book".into(), "pen".into()] };
    let frame = first_frame(&checkout(), &order);
    let r = checkout().render(&frame).unwrap();
    assert_eq!(r.point, "for0/call(price)#0");
    let locals: Vec<(&str, &serde_json::Value)> =
        r.locals.iter().map(|(n, v)| (n.as_str(), v)).collect();
    assert_eq!(locals[0], ("order", &json!({ "id": "INV-acme-42", "items": ["book", "pen"] })));
    assert_eq!(locals[1], ("total", &json!(0)));
    assert!(r.nested.is_none());
}

#[test]
fn a_frame_inside_a_durable_function_renders_both_levels() {
    let frame = first_frame(&quote(), &("Q-1".to_owned(), vec!["a".to_owned(), "bb".to_owned()]));
    let r = quote().render(&frame).unwrap();
    assert_eq!(r.point, "total_of#0");
    assert_eq!(r.locals, [("label".to_owned(), json!("Q-1"))]);
    let (name, inner) = r.nested.unwrap();
    assert_eq!(name, "graph::total_of");
    assert_eq!(inner.point, "for0/call(price)#0");
    assert!(inner.locals.iter().any(|(n, v)| n == "sum" && *v == json!(0)));
}

#[test]
fn a_frame_of_another_build_is_refused_by_name() {
    let order = Order { id: "x".into(), items: vec!["a".into()] };
    let mut frame = first_frame(&checkout(), &order);
    frame.point = "gone#0".into();
    let e = checkout().render(&frame).unwrap_err();
    assert!(e.to_string().contains("`gone#0`"), "{e}");
}
