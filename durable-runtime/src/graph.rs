//! What the macro knows about an orchestration and its instances, for people: the step graph
//! (suspension points and the control flow between them) and the locals stored in a frame,
//! decoded with their real types and shown as JSON.

use serde::Serialize;

/// The start of an orchestration, as the source of edges in a [`StepGraph`].
pub const GRAPH_START: &str = "start";
/// The end of an orchestration (a return, or an error through `?`), as the target of edges.
pub const GRAPH_END: &str = "end";

/// An orchestration's step graph, as `#[orchestration]` compiled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepGraph {
    /// The stored name.
    pub name: String,
    /// The version.
    pub version: u32,
    /// The suspension points, in source order.
    pub points: Vec<GraphPoint>,
    /// Control-flow edges between points: `(from, to)`, each a point's identity, or
    /// [`GRAPH_START`] / [`GRAPH_END`]. A point's outgoing edges lead to the points its next
    /// step can park at.
    pub edges: Vec<(String, String)>,
}

/// A suspension point in a [`StepGraph`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphPoint {
    /// The stable identity stored in frames (enclosing constructs and the operation).
    pub identity: String,
    /// Source file of the `.await`.
    pub file: String,
    /// Source line of the `.await`.
    pub line: u32,
    /// The awaited operation as written (`call(charge)`, `sleep`, `book`…).
    pub operation: String,
    /// The locals stored at this point, in stored order, with their types.
    pub locals: Vec<GraphLocal>,
}

/// A stored local of a [`GraphPoint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphLocal {
    /// Its name (a description for values the macro introduced, such as a loop's iterator).
    pub name: String,
    /// Its type, as `std::any::type_name` spells it.
    pub ty: String,
}

/// The locals of a frame, decoded with their real types: each as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedFrame {
    /// The suspension point.
    pub point: String,
    /// Name and value of each stored local, in stored order.
    pub locals: Vec<(String, serde_json::Value)>,
    /// The frame of the durable function the point awaits, if any.
    pub nested: Option<(String, Box<RenderedFrame>)>,
}
