//! The step graph of a lowered machine: which suspension points a step can park at next, from
//! the start and from each point, and which can end the orchestration.

use std::collections::BTreeSet;

use proc_macro2::TokenTree;
use quote::ToTokens;

use crate::ir::{BlockId, Machine, Node};

/// A node of the step graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum At {
    Start,
    Point(usize),
    End,
}

/// The edges of the graph, sorted: from the start and from each reachable point, to the points
/// the next step can park at, and to the end where it can return.
pub(crate) fn edges(m: &Machine) -> Vec<(At, At)> {
    let mut out = BTreeSet::new();
    let mut sources = vec![(At::Start, 0)];
    for (p, point) in m.points.iter().enumerate() {
        if m.reachable.get(point.resume).copied().unwrap_or(false) {
            sources.push((At::Point(p), point.resume));
            if point.try_op {
                out.insert((At::Point(p), At::End));
            }
        }
    }
    for (from, block) in sources {
        let mut seen = BTreeSet::new();
        let mut targets = BTreeSet::new();
        walk_block(m, block, &mut seen, &mut targets);
        out.extend(targets.into_iter().map(|to| (from, to)));
    }
    out.into_iter().collect()
}

fn walk_block(m: &Machine, b: BlockId, seen: &mut BTreeSet<BlockId>, out: &mut BTreeSet<At>) {
    if seen.insert(b) {
        walk(m, &m.blocks[b].body, seen, out);
    }
}

fn walk(m: &Machine, nodes: &[Node], seen: &mut BTreeSet<BlockId>, out: &mut BTreeSet<At>) {
    for n in nodes {
        match n {
            Node::Code { stmt, gotos, .. } => {
                if returns_early(stmt.to_token_stream()) {
                    out.insert(At::End);
                }
                for g in gotos {
                    walk_block(m, m.gotos[*g].target, seen, out);
                }
            }
            Node::If { cond, then, els, .. } => {
                if returns_early(cond.to_token_stream()) {
                    out.insert(At::End);
                }
                walk(m, then, seen, out);
                walk(m, els, seen, out);
            }
            Node::Match { scrutinee, arms, .. } => {
                if returns_early(scrutinee.to_token_stream()) {
                    out.insert(At::End);
                }
                for a in arms {
                    walk(m, &a.body, seen, out);
                }
            }
            Node::Scope(inner) => walk(m, inner, seen, out),
            Node::Goto(g) => walk_block(m, m.gotos[*g].target, seen, out),
            Node::Suspend(p) => {
                out.insert(At::Point(*p));
            }
            Node::Return { .. } => {
                out.insert(At::End);
            }
        }
    }
}

/// Whether user code can leave the function (`?` or `return`), outside closures.
fn returns_early(tokens: proc_macro2::TokenStream) -> bool {
    let mut after_pipe = false;
    for tt in tokens {
        match tt {
            TokenTree::Punct(p) if p.as_char() == '?' => return true,
            TokenTree::Ident(i) if i == "return" => return true,
            // A closure's body returns from the closure: skip `|..| body` conservatively.
            TokenTree::Punct(p) if p.as_char() == '|' => after_pipe = true,
            TokenTree::Group(g) if !after_pipe && returns_early(g.stream()) => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Errors;

    fn graph(body: &str) -> Vec<(String, String)> {
        let block: syn::Block = syn::parse_str(body).unwrap();
        let errors = Errors::default();
        let krate = quote::quote!(::durable);
        let mut m = crate::lower::lower(&block, &[], &krate, &errors);
        crate::analyze::liveness(&mut m, &errors);
        assert!(errors.is_empty());
        let name = |a: At| match a {
            At::Start => "start".to_owned(),
            At::End => "end".to_owned(),
            At::Point(p) => m.points[p].identity.clone(),
        };
        edges(&m).into_iter().map(|(f, t)| (name(f), name(t))).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        v
    }

    fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        v
    }

    #[test]
    fn a_straight_line_is_a_chain() {
        let g = graph("{ let a = ctx.call(f, 1).await?; let b = ctx.call(g, a).await?; Ok(b) }");
        assert_eq!(
            sorted(g),
            pairs(&[
                ("start", "call(f)#0"),
                ("call(f)#0", "call(g)#0"),
                ("call(f)#0", "end"),
                ("call(g)#0", "end"),
            ])
        );
    }

    #[test]
    fn a_branch_forks_and_joins() {
        let g = graph(
            "{ let a = ctx.call(f, 1).await.unwrap_or(0);
               if a > 1 { ctx.call(g, a).await.ok(); } else { ctx.sleep(d).await; }
               ctx.call(h, a).await.ok(); Ok(a) }",
        );
        assert_eq!(
            sorted(g),
            pairs(&[
                ("start", "call(f)#0"),
                ("call(f)#0", "if0/then/call(g)#0"),
                ("call(f)#0", "if0/else/sleep#0"),
                ("if0/then/call(g)#0", "call(h)#0"),
                ("if0/else/sleep#0", "call(h)#0"),
                ("call(h)#0", "end"),
            ])
        );
    }

    #[test]
    fn a_loop_comes_back_to_its_point_and_leaves_it() {
        let g = graph(
            "{ let mut n = 0; for i in 0..3 { n += ctx.call(f, i).await.unwrap_or(0); }
               let all = ctx.join(vec![ctx.call(f, n), ctx.call(f, 1)]).await; Ok(all.len()) }",
        );
        assert_eq!(
            sorted(g),
            pairs(&[
                ("start", "for0/call(f)#0"),
                ("start", "join#0"),
                ("for0/call(f)#0", "for0/call(f)#0"),
                ("for0/call(f)#0", "join#0"),
                ("join#0", "end"),
            ])
        );
    }
}
