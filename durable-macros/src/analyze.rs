//! Name analysis and liveness.
//!
//! Visitor policy: uses are collected everywhere a local can be named, including closures (they
//! capture), macro invocations (every identifier token counts) and format strings (`"{x}"`,
//! `"{:w$}"`). Names are resolved by scope: a closure parameter, an inner block's `let`, an
//! arm's, `if let`'s or `for`'s pattern hides the local of the same name inside it; assigning a
//! local (`x = e`) is not a use. Nested items are not entered: they cannot name the function's
//! locals. Over-approximating uses only stores a local that was not needed; missing one would
//! lose it, so every doubt (a name inside a macro) counts as a use.

use std::collections::{BTreeSet, HashMap};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::{self, Visit};

use crate::error::Errors;
use crate::ir::{BindingId, Machine, Node};

/// Identifiers a piece of code may read or write that it does not bind itself: a closure's
/// parameters, a `let` in an inner block, a `match` arm's or `if let`'s pattern and a `for`
/// pattern hide the locals of the same name inside their scope.
#[derive(Default)]
pub(crate) struct Names {
    found: BTreeSet<String>,
    /// Names bound inside the code being scanned, innermost scope last.
    bound: Vec<BTreeSet<String>>,
}

impl Names {
    fn found(&mut self, name: String) {
        if !self.bound.iter().any(|s| s.contains(&name)) {
            self.found.insert(name);
        }
    }

    fn bind(&mut self, pat: &syn::Pat, irrefutable: bool) {
        let names = pattern_bindings_in(pat, irrefutable).into_iter().map(|b| b.ident.to_string());
        match self.bound.last_mut() {
            Some(scope) => scope.extend(names),
            None => self.bound.push(names.collect()),
        }
    }

    fn scoped(&mut self, f: impl FnOnce(&mut Self)) {
        self.bound.push(BTreeSet::new());
        f(self);
        self.bound.pop();
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_expr_path(&mut self, p: &'ast syn::ExprPath) {
        if p.qself.is_none()
            && let Some(id) = p.path.get_ident()
        {
            self.found(id.to_string());
        }
        visit::visit_expr_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let mut names = BTreeSet::new();
        scan_tokens(m.tokens.clone(), &mut names);
        names.into_iter().for_each(|n| self.found(n));
    }
    fn visit_expr_assign(&mut self, a: &'ast syn::ExprAssign) {
        // Assigning a local does not read it.
        if plain_local(&a.left).is_none() {
            self.visit_expr(&a.left);
        }
        self.visit_expr(&a.right);
    }
    fn visit_expr_closure(&mut self, c: &'ast syn::ExprClosure) {
        self.scoped(|v| {
            c.inputs.iter().for_each(|p| v.bind(p, true));
            v.visit_expr(&c.body);
        });
    }
    fn visit_block(&mut self, b: &'ast syn::Block) {
        self.scoped(|v| b.stmts.iter().for_each(|s| v.visit_stmt(s)));
    }
    fn visit_local(&mut self, l: &'ast syn::Local) {
        // The initialiser and `else` see the names from before the `let`.
        if let Some(init) = &l.init {
            self.visit_expr(&init.expr);
            if let Some((_, d)) = &init.diverge {
                self.visit_expr(d);
            }
        }
        let irrefutable = l.init.as_ref().is_none_or(|i| i.diverge.is_none());
        self.bind(&l.pat, irrefutable);
    }
    fn visit_expr_let(&mut self, l: &'ast syn::ExprLet) {
        self.visit_expr(&l.expr);
        self.bind(&l.pat, false);
    }
    fn visit_expr_if(&mut self, i: &'ast syn::ExprIf) {
        self.scoped(|v| {
            v.visit_expr(&i.cond);
            v.visit_block(&i.then_branch);
        });
        if let Some((_, e)) = &i.else_branch {
            self.visit_expr(e);
        }
    }
    fn visit_expr_while(&mut self, w: &'ast syn::ExprWhile) {
        self.scoped(|v| {
            v.visit_expr(&w.cond);
            v.visit_block(&w.body);
        });
    }
    fn visit_expr_for_loop(&mut self, f: &'ast syn::ExprForLoop) {
        self.visit_expr(&f.expr);
        self.scoped(|v| {
            v.bind(&f.pat, true);
            v.visit_block(&f.body);
        });
    }
    fn visit_arm(&mut self, a: &'ast syn::Arm) {
        self.scoped(|v| {
            v.bind(&a.pat, false);
            if let syn::Pat::Guard(g) = &a.pat {
                v.visit_expr(&g.guard);
            }
            v.visit_expr(&a.body);
        });
    }
    fn visit_item(&mut self, _: &'ast syn::Item) {}
}

/// The local an expression names, if it is just a name: `x`, `(x)`.
pub(crate) fn plain_local(e: &syn::Expr) -> Option<String> {
    match e {
        syn::Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => {
            p.path.get_ident().map(ToString::to_string)
        }
        syn::Expr::Paren(p) => plain_local(&p.expr),
        _ => None,
    }
}

fn scan_tokens(tokens: TokenStream, out: &mut BTreeSet<String>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => {
                out.insert(i.to_string());
            }
            TokenTree::Group(g) => scan_tokens(g.stream(), out),
            TokenTree::Literal(l) => format_captures(&l.to_string(), out),
            TokenTree::Punct(_) => {}
        }
    }
}

/// The identifiers in a macro's tokens, format string captures included.
pub(crate) fn names_in_tokens(tokens: &TokenStream) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    scan_tokens(tokens.clone(), &mut out);
    out
}

/// Adds the names of the macros invoked in `node` (`name!`), at any depth, macro arguments and
/// `macro_rules!` bodies included.
pub(crate) fn macro_invocations<T: quote::ToTokens>(node: &T, out: &mut BTreeSet<String>) {
    fn scan(tokens: TokenStream, out: &mut BTreeSet<String>) {
        let mut prev: Option<String> = None;
        for tt in tokens {
            match &tt {
                TokenTree::Punct(p) if p.as_char() == '!' => {
                    if let Some(name) = prev.take() {
                        out.insert(name);
                    }
                }
                TokenTree::Group(g) => scan(g.stream(), out),
                _ => {}
            }
            prev = match tt {
                TokenTree::Ident(i) => Some(i.to_string()),
                _ => None,
            };
        }
    }
    scan(node.to_token_stream(), out);
}

/// Identifiers captured by a format string literal: `"{x}"`, `"{x:?}"`, `"{x:>5}"`, and the
/// counts of a format spec, `"{:>width$}"`, `"{x:.prec$}"`.
fn format_captures(lit: &str, out: &mut BTreeSet<String>) {
    if !(lit.starts_with('"') || lit.starts_with('r')) {
        return;
    }
    let chars: Vec<char> = lit.chars().collect();
    let ident_end = |mut j: usize| {
        while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        j
    };
    let is_name = |name: &[char]| name.first().is_some_and(|c| !c.is_ascii_digit());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '{' {
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            i += 2;
            continue;
        }
        let start = i + 1;
        let j = ident_end(start);
        let closes = matches!(chars.get(j), Some('}') | Some(':'));
        if closes && is_name(&chars[start..j]) {
            out.insert(chars[start..j].iter().collect());
        }
        i = j;
        if chars.get(j) == Some(&':') {
            // The spec, up to `}`: a count is an identifier followed by `$`.
            let mut k = j + 1;
            while k < chars.len() && chars[k] != '}' {
                let e = ident_end(k);
                if e > k && chars.get(e) == Some(&'$') && is_name(&chars[k..e]) {
                    out.insert(chars[k..e].iter().collect());
                }
                k = e.max(k + 1);
            }
            i = k;
        }
    }
}

/// The names used by an expression, statement or pattern guard.
pub(crate) fn names_in<T: NameSource + ?Sized>(node: &T) -> BTreeSet<String> {
    let mut n = Names::default();
    node.visit_with(&mut n);
    n.found
}

/// Syntax nodes whose names can be collected.
pub(crate) trait NameSource {
    #[doc(hidden)]
    fn visit_with(&self, v: &mut Names);
}

impl NameSource for syn::Expr {
    fn visit_with(&self, v: &mut Names) {
        v.visit_expr(self);
    }
}
impl NameSource for syn::Stmt {
    fn visit_with(&self, v: &mut Names) {
        v.visit_stmt(self);
    }
}
impl NameSource for syn::Pat {
    fn visit_with(&self, v: &mut Names) {
        // Names in patterns are bindings, except those in guards and paths of constants.
        if let syn::Pat::Guard(g) = self {
            v.visit_expr(&g.guard);
        }
    }
}

/// A binding introduced by a pattern.
pub(crate) struct PatBinding {
    pub ident: syn::Ident,
    pub mutable: bool,
    pub by_ref: bool,
}

/// The bindings a pattern introduces. In a pattern that always matches (`let`, parameters,
/// `for`), a constant could not stand, so only a `CamelCase` name is taken for a unit struct;
/// `N` or `MAX` there is a local.
pub(crate) fn pattern_bindings_in(pat: &syn::Pat, irrefutable: bool) -> Vec<PatBinding> {
    struct Collect(Vec<PatBinding>, bool);
    impl<'ast> Visit<'ast> for Collect {
        fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
            let name = p.ident.to_string();
            let upper = name.chars().next().is_some_and(char::is_uppercase);
            let camel = upper && name.chars().any(char::is_lowercase);
            let is_const = p.subpat.is_none() && if self.1 { camel } else { upper };
            if !is_const {
                self.0.push(PatBinding {
                    ident: p.ident.clone(),
                    mutable: p.mutability.is_some(),
                    by_ref: p.by_ref.is_some(),
                });
            }
            visit::visit_pat_ident(self, p);
        }
        fn visit_pat_guard(&mut self, g: &'ast syn::PatGuard) {
            self.visit_pat(&g.pat);
        }
        fn visit_expr(&mut self, _: &'ast syn::Expr) {}
    }
    let mut c = Collect(Vec::new(), irrefutable);
    c.visit_pat(pat);
    c.0
}

/// Whether `expr` contains a durable `.await` the lowering must handle (not counting closures,
/// async blocks, nested items and macros, which `check_await_positions` rejects).
pub(crate) fn has_await<T: AwaitSource + ?Sized>(node: &T) -> bool {
    struct Find(bool);
    impl<'ast> Visit<'ast> for Find {
        fn visit_expr_await(&mut self, _: &'ast syn::ExprAwait) {
            self.0 = true;
        }
        fn visit_expr_closure(&mut self, _: &'ast syn::ExprClosure) {}
        fn visit_expr_async(&mut self, _: &'ast syn::ExprAsync) {}
        fn visit_item(&mut self, _: &'ast syn::Item) {}
    }
    let mut f = Find(false);
    node.accept(&mut f);
    f.0
}

/// Syntax nodes that can contain an `.await`.
pub(crate) trait AwaitSource {
    #[doc(hidden)]
    fn accept<'a, V: Visit<'a>>(&'a self, v: &mut V);
}
impl AwaitSource for syn::Expr {
    fn accept<'a, V: Visit<'a>>(&'a self, v: &mut V) {
        v.visit_expr(self);
    }
}
impl AwaitSource for syn::Stmt {
    fn accept<'a, V: Visit<'a>>(&'a self, v: &mut V) {
        v.visit_stmt(self);
    }
}
impl AwaitSource for syn::Block {
    fn accept<'a, V: Visit<'a>>(&'a self, v: &mut V) {
        v.visit_block(self);
    }
}

/// Rejects `.await` where no step machine can resume: inside closures, async blocks and macro
/// invocations; and the `join!`/`select!` macros of async runtimes, which await by themselves.
pub(crate) fn check_await_positions(body: &syn::Block, ctx: &syn::Pat, errors: &Errors) {
    struct Check<'e> {
        errors: &'e Errors,
        inside: Option<&'static str>,
        ctx: Option<String>,
    }
    impl Check<'_> {
        /// `tokio::join!(ctx.call(..), ..)`, `futures::select! { .. }`, or such a macro whose
        /// arguments await or use the context.
        fn awaiting_macro(&self, m: &syn::Macro) -> Option<&'static str> {
            let segments: Vec<String> =
                m.path.segments.iter().map(|s| s.ident.to_string()).collect();
            let last = segments.last()?;
            let instead = match last.as_str() {
                "join" | "try_join" => {
                    "`ctx.join([..]).await` (same kind) or `ctx.join2(a, b).await`"
                }
                "select" | "select_biased" => {
                    "`ctx.race([..]).await` (same kind) or `ctx.race2(a, b).await`"
                }
                _ => return None,
            };
            let from_runtime = segments.len() > 1
                && ["tokio", "futures", "futures_util", "futures_lite"]
                    .contains(&segments[0].as_str());
            let names = names_in_tokens(&m.tokens);
            let uses_ctx = self.ctx.as_ref().is_some_and(|c| names.contains(c));
            (from_runtime || uses_ctx || await_in_tokens(m.tokens.clone()).is_some())
                .then_some(instead)
        }
    }
    impl<'ast> Visit<'ast> for Check<'_> {
        fn visit_expr_await(&mut self, a: &'ast syn::ExprAwait) {
            if let Some(what) = self.inside {
                self.errors.at(
                    a.await_token,
                    format!(
                        "`.await` inside {what} cannot be made durable: the step machine can only \
                         suspend in the orchestration's own body; move the durable call out of {what}"
                    ),
                );
            }
            visit::visit_expr_await(self, a);
        }
        fn visit_expr_closure(&mut self, c: &'ast syn::ExprClosure) {
            let outer = self.inside.replace("a closure");
            visit::visit_expr_closure(self, c);
            self.inside = outer;
        }
        fn visit_expr_async(&mut self, c: &'ast syn::ExprAsync) {
            let outer = self.inside.replace("an async block");
            visit::visit_expr_async(self, c);
            self.inside = outer;
        }
        fn visit_item(&mut self, _: &'ast syn::Item) {}
        fn visit_macro(&mut self, m: &'ast syn::Macro) {
            if self.inside.is_none()
                && let Some(instead) = self.awaiting_macro(m)
            {
                let name = m.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
                self.errors.at(
                    &m.path,
                    format!(
                        "`{name}!` awaits its futures itself, which the step machine cannot make \
                         durable; await the durable operations together with {instead}"
                    ),
                );
            } else if let Some(span) = await_in_tokens(m.tokens.clone()) {
                self.errors.at_span(
                    span,
                    "`.await` inside a macro invocation cannot be made durable; bind the awaited \
                     value to a `let` before the macro and use the local",
                );
            }
        }
    }
    let ctx = match ctx {
        syn::Pat::Ident(p) => Some(p.ident.to_string()),
        _ => None,
    };
    Check { errors, inside: None, ctx }.visit_block(body);
}

fn await_in_tokens(tokens: TokenStream) -> Option<proc_macro2::Span> {
    let mut prev_dot = false;
    for tt in tokens {
        match &tt {
            TokenTree::Ident(i) if prev_dot && i == "await" => return Some(i.span()),
            TokenTree::Group(g) => {
                if let Some(s) = await_in_tokens(g.stream()) {
                    return Some(s);
                }
            }
            _ => {}
        }
        prev_dot = matches!(&tt, TokenTree::Punct(p) if p.as_char() == '.');
    }
    None
}

/// Computes each block's live-in locals (backward dataflow to a fixpoint; loops make it
/// iterate) and checks that every stored local can be stored and reached by its name.
pub(crate) fn liveness(m: &mut Machine, errors: &Errors) {
    let n = m.blocks.len();
    let mut live_in: Vec<BTreeSet<BindingId>> = vec![BTreeSet::new(); n];
    loop {
        let mut changed = false;
        for b in (0..n).rev() {
            let mut set = live_nodes(m, &m.blocks[b].body, &live_in);
            if let crate::ir::BlockKind::Resume(p) = m.blocks[b].kind {
                set.remove(&m.points[p].value);
            }
            if set != live_in[b] {
                live_in[b] = set;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for (b, set) in live_in.into_iter().enumerate() {
        m.blocks[b].live_in = set.into_iter().collect();
    }
    check_transfers(m, errors);
}

fn live_nodes(m: &Machine, nodes: &[Node], live_in: &[BTreeSet<BindingId>]) -> BTreeSet<BindingId> {
    let goto_live = |g: usize| -> BTreeSet<BindingId> {
        let goto = &m.gotos[g];
        live_in[goto.target].iter().copied().filter(|b| !goto.provides.contains(b)).collect()
    };
    let mut live = BTreeSet::new();
    for node in nodes.iter().rev() {
        match node {
            Node::Code { uses, defs, gotos, .. } => {
                for d in defs {
                    live.remove(d);
                }
                live.extend(uses.iter().copied());
                for g in gotos {
                    live.extend(goto_live(*g));
                }
            }
            Node::If { uses, defs, then, els, .. } => {
                let mut t = live_nodes(m, then, live_in);
                for d in defs {
                    t.remove(d);
                }
                t.extend(live_nodes(m, els, live_in));
                t.extend(uses.iter().copied());
                live = t;
            }
            Node::Match { uses, arms, .. } => {
                let mut all = uses.clone();
                for arm in arms {
                    let mut a = live_nodes(m, &arm.body, live_in);
                    a.extend(arm.uses.iter().copied());
                    for d in &arm.defs {
                        a.remove(d);
                    }
                    all.extend(a);
                }
                live = all;
            }
            Node::Scope(inner) => live = live_nodes(m, inner, live_in),
            Node::Goto(g) => live = goto_live(*g),
            Node::Suspend(p) => {
                let point = &m.points[*p];
                live = live_in[point.resume].clone();
                live.remove(&point.value);
                live.extend(point.uses.iter().copied());
            }
            Node::Return { uses, .. } => live = uses.clone(),
        }
    }
    live
}

fn check_transfers(m: &Machine, errors: &Errors) {
    let mut reported = BTreeSet::new();
    let mut check = |visible: &HashMap<String, BindingId>,
                     target: usize,
                     provides: &[BindingId],
                     stored: bool| {
        for &b in &m.blocks[target].live_in {
            let binding = &m.bindings[b];
            let name = binding.ident.to_string();
            if stored
                && !binding.synthetic
                && let Some(why) = binding.borrowed
                && reported.insert((b, 0))
            {
                errors.at(
                    &binding.ident,
                    format!(
                        "`{name}` {why} and is alive across a durable `.await`: a checkpoint can \
                             only store owned values; store an owned value (`.to_owned()`, \
                             `String::from`, `.clone()`) or borrow again after the `.await`"
                    ),
                );
            }
            if !provides.contains(&b) && visible.get(&name) != Some(&b) && reported.insert((b, 1)) {
                errors.at(&binding.ident, format!(
                    "`{name}` is needed after a durable `.await` or loop jump, but another local \
                     named `{name}` shadows it there; rename one of them"
                ));
            }
        }
    };
    for g in &m.gotos {
        check(&g.visible, g.target, &g.provides, false);
    }
    for p in &m.points {
        check(&p.visible, p.resume, &[], true);
    }
}

/// What an orchestration body names through its context: activities (`ctx.call(path, ..)`) and
/// sub-orchestrations (`ctx.child(path, ..)`), anywhere in the body, closures included, so that
/// registering the orchestration registers them too.
pub(crate) fn dependencies(body: &syn::Block, ctx: &syn::Pat) -> (Vec<syn::Path>, Vec<syn::Path>) {
    struct Deps<'a> {
        ctx: Option<&'a syn::Ident>,
        activities: Vec<syn::Path>,
        children: Vec<syn::Path>,
    }
    fn push(list: &mut Vec<syn::Path>, p: &syn::Path) {
        let key = quote::quote!(#p).to_string();
        if !list.iter().any(|o| quote::quote!(#o).to_string() == key) {
            list.push(p.clone());
        }
    }
    impl<'ast> Visit<'ast> for Deps<'_> {
        fn visit_expr_method_call(&mut self, mc: &'ast syn::ExprMethodCall) {
            let on_ctx = match (&*mc.receiver, self.ctx) {
                (syn::Expr::Path(p), Some(ctx)) => p.path.is_ident(ctx),
                _ => false,
            };
            if on_ctx
                && mc.args.len() == 2
                && let Some(syn::Expr::Path(p)) = mc.args.first()
            {
                if mc.method == "call" {
                    push(&mut self.activities, &p.path);
                } else if mc.method == "child" {
                    push(&mut self.children, &p.path);
                }
            }
            visit::visit_expr_method_call(self, mc);
        }
        fn visit_macro(&mut self, m: &'ast syn::Macro) {
            // `vec![ctx.call(a, x), …]` and the like: look into arguments that parse as
            // expressions.
            use syn::parse::Parser;
            let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
            if let Ok(args) = parser.parse2(m.tokens.clone()) {
                for a in &args {
                    let mut inner =
                        Deps { ctx: self.ctx, activities: Vec::new(), children: Vec::new() };
                    inner.visit_expr(a);
                    inner.activities.iter().for_each(|p| push(&mut self.activities, p));
                    inner.children.iter().for_each(|p| push(&mut self.children, p));
                }
            }
        }
        fn visit_item(&mut self, _: &'ast syn::Item) {}
    }
    let ctx = match ctx {
        syn::Pat::Ident(p) => Some(&p.ident),
        _ => None,
    };
    let mut d = Deps { ctx, activities: Vec::new(), children: Vec::new() };
    d.visit_block(body);
    (d.activities, d.children)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_captures_are_uses() {
        let mut out = BTreeSet::new();
        format_captures(
            "\"{a} {b:?} {{c}} {0} {d:>5} {} {e:>w$} {:.p$} {:1$} {f:x<0$}\"",
            &mut out,
        );
        assert_eq!(out.into_iter().collect::<Vec<_>>(), ["a", "b", "d", "e", "f", "p", "w"]);
    }

    #[test]
    fn macro_tokens_and_closures_are_uses() {
        let e: syn::Expr = syn::parse_quote!(f(|y| x + y, vec![z], format!("{w}")));
        let n = names_in(&e);
        for name in ["x", "z", "w", "f"] {
            assert!(n.contains(name), "{name} missing from {n:?}");
        }
        assert!(!n.contains("y"), "the closure's own parameter");
    }

    #[test]
    fn names_bound_inside_the_code_are_not_uses_of_outer_locals() {
        let e: syn::Expr = syn::parse_quote!(
            items
                .iter()
                .map(|name| name.len() + other)
                .chain({
                    let data = vec![1];
                    data
                })
                .chain(match x {
                    Some(k) => k,
                    None => k2,
                })
                .chain(if let Some(y) = y { y } else { y2 })
                .sum::<usize>()
                + format!("{name}").len()
        );
        let n = names_in(&e);
        assert_eq!(
            n.into_iter().collect::<Vec<_>>(),
            ["items", "k2", "name", "other", "x", "y", "y2"],
            "`name` only from the format string outside the closure; no `data`, `k`"
        );
    }

    #[test]
    fn uppercase_names_in_let_patterns_are_locals() {
        let p: syn::Pat = syn::parse_quote!((N, Marker, MAX_LEN));
        let names: Vec<_> =
            pattern_bindings_in(&p, true).iter().map(|b| b.ident.to_string()).collect();
        assert_eq!(names, ["N", "MAX_LEN"]);
    }

    #[test]
    fn patterns_bind_lowercase_identifiers() {
        let p: syn::Pat = syn::parse_quote!((mut a, Some(b), None, S { c, d: ref e }, [f, ..]));
        let names: Vec<_> =
            pattern_bindings_in(&p, false).iter().map(|b| b.ident.to_string()).collect();
        assert_eq!(names, ["a", "b", "c", "e", "f"]);
    }
}
