//! The step machine as plain data: blocks of code ending in transfers, and the suspension points
//! between them. `lower` builds it, `analyze::liveness` fills in what each block stores, `expand`
//! turns it into tokens. Unit tests read it directly.

use std::collections::{BTreeSet, HashMap};

use proc_macro2::{Ident, Span};

pub(crate) type BindingId = usize;
pub(crate) type BlockId = usize;
pub(crate) type PointId = usize;
pub(crate) type GotoId = usize;

/// A local of the orchestration: a user binding (one per `let` pattern identifier, so shadowing
/// gives a new binding) or a temporary the lowering introduced.
#[derive(Clone)]
pub(crate) struct Binding {
    pub ident: Ident,
    /// The name stored in layouts: the identifier, or for a temporary a description that
    /// depends only on where it is in the code's structure.
    pub name: String,
    pub mutable: bool,
    /// Introduced by the lowering (awaited values, loop iterators, values of `if`/`match`).
    pub synthetic: bool,
    /// Bound to a reference (`ref` pattern, `&` initialiser, string literal): never storable.
    pub borrowed: Option<&'static str>,
    /// The type written for it (`let x: T;`), repeated where an assignment declares it again.
    pub ty: Option<syn::Type>,
}

/// What happens to a value flowing out of lowered code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    /// The first block: built from the input.
    Entry,
    /// Entered by decoding a frame saved at this point.
    Resume(PointId),
    /// Entered from other blocks: joins after `if`/`match`, loop heads and exits.
    Join,
    /// A branch of an `if` or `match`: lowered as a block, then inlined into its branch.
    Branch,
}

#[derive(Clone)]
pub(crate) struct Block {
    pub kind: BlockKind,
    /// Locals alive on entry, in binding order (filled by liveness).
    pub live_in: Vec<BindingId>,
    pub body: Vec<Node>,
}

/// A piece of a block. Every node list ends with a transfer: `Goto`, `Suspend`, `Return`, or an
/// `If`/`Match` all of whose branches end with one.
#[derive(Clone)]
pub(crate) enum Node {
    /// User code, kept as written apart from `?`, `return` and gotos for `break`/`continue`.
    Code {
        stmt: syn::Stmt,
        uses: BTreeSet<BindingId>,
        defs: Vec<BindingId>,
        gotos: Vec<GotoId>,
    },
    If {
        cond: syn::Expr,
        uses: BTreeSet<BindingId>,
        defs: Vec<BindingId>,
        then: Vec<Node>,
        els: Vec<Node>,
    },
    Match {
        scrutinee: syn::Expr,
        uses: BTreeSet<BindingId>,
        arms: Vec<Arm>,
    },
    /// A Rust block of its own (`{ … }`), for a user block that declares items: they must not
    /// be visible outside it. Ends with a transfer like any node list.
    Scope(Vec<Node>),
    Goto(GotoId),
    Suspend(PointId),
    Return {
        expr: syn::Expr,
        uses: BTreeSet<BindingId>,
    },
}

#[derive(Clone)]
pub(crate) struct Arm {
    pub pat: syn::Pat,
    pub defs: Vec<BindingId>,
    pub uses: BTreeSet<BindingId>,
    pub body: Vec<Node>,
}

/// A jump to a block, with the bindings visible by name where it is written.
#[derive(Clone)]
pub(crate) struct Goto {
    pub target: BlockId,
    pub visible: HashMap<String, BindingId>,
    /// Bindings assigned right at the jump (`break value`), not taken from before it.
    pub provides: Vec<BindingId>,
    pub span: Span,
}

/// A durable `.await`.
#[derive(Clone)]
pub(crate) struct Point {
    /// Stable identity: enclosing constructs and the operation, not the line.
    pub identity: String,
    /// The awaited operation as the identity describes it (`call(charge)`, `sleep`).
    pub operation: String,
    /// The awaited operation expression.
    pub op: syn::Expr,
    pub uses: BTreeSet<BindingId>,
    /// The binding that receives the awaited value in the resume block.
    pub value: BindingId,
    /// `.await?`: the value goes through `?` first.
    pub try_op: bool,
    /// The block that continues after the await.
    pub resume: BlockId,
    pub visible: HashMap<String, BindingId>,
    /// The `.await` token's span.
    pub span: Span,
}

#[derive(Clone, Default)]
pub(crate) struct Machine {
    pub bindings: Vec<Binding>,
    pub blocks: Vec<Block>,
    pub points: Vec<Point>,
    pub gotos: Vec<Goto>,
    /// Items declared in the body that define something unique (types, statics, impls…),
    /// hoisted to the top of the generated function. Items that can be declared again (`const`,
    /// `use`, `fn`, `type`, `macro_rules!`) stay in their block, declared again in each piece of
    /// it.
    pub items: Vec<syn::Item>,
    /// The input patterns with the bindings they introduce, in parameter order.
    pub inputs: Vec<(syn::Pat, Vec<BindingId>)>,
    /// Blocks reachable from the entry (filled by `lower::finish`).
    pub reachable: Vec<bool>,
    /// The entry, join and resume blocks in the order the lowering entered them, which is the
    /// order of the source: each comes after a block that jumps to it, and the code that fixes
    /// a local's type (`acc.push(v)`) comes before code after it that needs the type.
    pub source_order: Vec<BlockId>,
}

impl Machine {
    /// The blocks `nodes` can jump or resume to, in the order they are written.
    pub(crate) fn successors(&self, nodes: &[Node], out: &mut Vec<BlockId>) {
        for n in nodes {
            match n {
                Node::Code { gotos, .. } => out.extend(gotos.iter().map(|g| self.gotos[*g].target)),
                Node::If { then, els, .. } => {
                    self.successors(then, out);
                    self.successors(els, out);
                }
                Node::Match { arms, .. } => arms.iter().for_each(|a| self.successors(&a.body, out)),
                Node::Scope(inner) => self.successors(inner, out),
                Node::Goto(g) => out.push(self.gotos[*g].target),
                Node::Suspend(p) => out.push(self.points[*p].resume),
                Node::Return { .. } => {}
            }
        }
    }

    /// The reachable blocks that become match arms, in source order.
    pub(crate) fn arm_order(&self) -> Vec<BlockId> {
        let mut seen = vec![false; self.blocks.len()];
        let reachable = self.depth_first();
        // Any reachable block the lowering did not record still gets its arm, after the others.
        self.source_order
            .iter()
            .chain(&reachable)
            .copied()
            .filter(|b| {
                reachable.contains(b)
                    && self.blocks[*b].kind != BlockKind::Branch
                    && !std::mem::replace(&mut seen[*b], true)
            })
            .collect()
    }

    /// The blocks reachable from the entry, depth first, following jumps in the order they are
    /// written: each block comes after one that builds its state variant.
    pub(crate) fn depth_first(&self) -> Vec<BlockId> {
        let mut seen = vec![false; self.blocks.len()];
        let mut order = Vec::new();
        let mut stack = vec![0];
        while let Some(b) = stack.pop() {
            if std::mem::replace(&mut seen[b], true) {
                continue;
            }
            order.push(b);
            let mut next = Vec::new();
            self.successors(&self.blocks[b].body, &mut next);
            stack.extend(next.into_iter().rev().filter(|n| !seen[*n]));
        }
        order
    }

    /// The names of the locals stored at each point, in point order.
    #[cfg(test)]
    pub(crate) fn stored_locals(&self) -> Vec<(String, Vec<String>)> {
        self.points
            .iter()
            .map(|p| {
                let names = self.blocks[p.resume]
                    .live_in
                    .iter()
                    .map(|b| self.bindings[*b].name.clone())
                    .collect();
                (p.identity.clone(), names)
            })
            .collect()
    }
}
