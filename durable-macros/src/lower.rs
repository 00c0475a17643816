//! Control flow → step machine.
//!
//! The body is cut at every durable `.await` into blocks; a block ends by jumping to another
//! block (in memory), by suspending (checkpoint, then resume in a new block), or by returning.
//! Each rewrite, by its shape (`Bn` are blocks, `Pn` suspension points):
//!
//! ```text
//! let x = op.await?;  rest        B0: suspend P1(op)            P1: let v = <completion>;
//!                                                                    let x = v?;  rest
//! a.await? + b.await?             lifted in evaluation order into two suspensions
//! f(x) / n + op.await?            let t = f(x) / n; suspend P(op)    P: t + v?
//!                                 (operands Rust evaluates before the await go into
//!                                 temporaries first; places that are borrowed stay places)
//! { const C: T = ..; A.await; B } { const C: T = ..; A; suspend P }  P: const C: T = ..; B
//!                                 (a block that declares items is a Rust block of its own;
//!                                 `const`/`use`/`fn`/`type`/`macro_rules!` are declared again
//!                                 in each piece, other items are hoisted to the function)
//! x = op(x).await?;               B0: suspend P1(op(x))     P1: let x = v?;  (x is not stored:
//!                                 a plain assignment kills it; `let x` where x is not bound)
//! v = match e { p => A, .. }      as `let t = match …`, then J: v = t;   (also `if`, `op=`)
//! if c { A } else { B }; rest     if c { A; goto J } else { B; goto J }       J: rest
//! let v = match e { p => A, .. }  match e { p => { let t = A; goto J } .. }  J: let v = t; rest
//! loop { A }; rest                goto H      H: A; goto H       break → goto X     X: rest
//! while c { A }                   H: if c { A; goto H } else { goto X }
//! for p in e { A }                let it = iter(e); goto H
//!                                 H: match next(&mut it) { Some(p) => { A; goto H } None => goto X }
//!                                 (the iterator is the range itself for `a..b`, `a..=b`, `a..`;
//!                                 else the iterable if it is a storable iterator, else the list
//!                                 of remaining items: `(&ForSource::new(e)).for_state()`)
//! for p in &v / v.iter()…         let it = cursor(); goto H
//!                                 H: match it.next_in(&v) { Some(p) => …, None => goto X }
//!                                 (`v` is stored; borrowed again at each iteration; only for
//!                                 collections whose order survives decoding: no `HashMap`;
//!                                 after an await in A, `let p = it.current_in(&v)` again)
//! for p in b.map(f).filter(q)     for t in b { let Some(t2) = once(t).map(f).filter(q).next()
//!                                 else { continue }; let p = t2; A }   (item by item, lazily)
//! return e / e?                   return Step::Done(e) / match e { Ok(v) => v, Err(e) =>
//!                                 return Step::Done(Err(From::from(e))) }
//! ```
//! Branches are lowered as blocks of their own and inlined afterwards, so code before a branch's
//! first await stays in the same Rust scope as its condition's bindings. Blocks are recorded in
//! the order the lowering enters them (`Machine::source_order`), which `expand` follows for the
//! arms, so rustc checks code in source order and infers types as for the plain function.

use std::collections::{BTreeSet, HashMap};

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident};
use syn::visit_mut::{self, VisitMut};
use syn::{Expr, Pat, Stmt, parse_quote};

use crate::analyze::{has_await, names_in, pattern_bindings_in};
use crate::error::Errors;
use crate::ir::{Arm, Binding, BindingId, Block, BlockId, BlockKind, Goto, Machine, Node, Point};

#[derive(Clone, Copy)]
enum Cont {
    /// The value is the orchestration's result.
    Return,
    /// Jump to `target`, handing the value over in `value` (or dropping it).
    Goto { target: BlockId, value: Option<BindingId> },
}

#[derive(Clone)]
struct LoopFrame {
    label: Option<String>,
    head: BlockId,
    exit: BlockId,
    value: Option<BindingId>,
}

pub(crate) struct Lowerer<'a> {
    m: Machine,
    errors: &'a Errors,
    krate: TokenStream,
    scopes: Vec<HashMap<String, BindingId>>,
    loops: Vec<LoopFrame>,
    cur: BlockId,
    path: Vec<String>,
    counters: Vec<HashMap<String, usize>>,
    temps: usize,
    /// The items that can be declared again, per user block, innermost last: declared again at
    /// the start of each block of the machine entered inside that user block.
    item_scopes: Vec<Vec<syn::Item>>,
    /// The `for` loops over a borrowed collection being lowered, innermost last: their
    /// pattern's bindings are borrowed again at the start of each piece of their body.
    cursors: Vec<CursorLoop>,
    /// The `macro_rules!` of the body whose expansion can `break` or `continue` a loop it is
    /// used in (see [`Rewrite::rewrite_macro`]).
    loop_control_macros: BTreeSet<String>,
    /// The whole body, to tell whether a name is used outside the block that declares it.
    body: TokenStream,
}

/// A `for` loop that resumes by position (`ForCursor`).
#[derive(Clone)]
struct CursorLoop {
    pat: Pat,
    defs: Vec<BindingId>,
    it: BindingId,
    base: Expr,
    head: BlockId,
}

/// Lowers an orchestration body whose inputs bind `inputs`.
pub(crate) fn lower(
    body: &syn::Block,
    inputs: &[Pat],
    krate: &TokenStream,
    errors: &Errors,
) -> Machine {
    let mut lw = Lowerer {
        m: Machine::default(),
        errors,
        krate: krate.clone(),
        scopes: vec![HashMap::new()],
        loops: Vec::new(),
        cur: 0,
        path: Vec::new(),
        counters: vec![HashMap::new()],
        temps: 0,
        item_scopes: Vec::new(),
        cursors: Vec::new(),
        loop_control_macros: loop_control_macros(body),
        body: body.to_token_stream(),
    };
    lw.new_block(BlockKind::Entry);
    lw.m.source_order.push(0);
    for pat in inputs {
        let defs = lw.define_pat(pat, None, true);
        lw.m.inputs.push((pat.clone(), defs));
    }
    lw.item_scopes.push(Vec::new());
    lw.hoist_for_types(&body.stmts);
    for item in redeclarable_items(&body.stmts) {
        lw.declare_item(item);
    }
    lw.lower_stmts(&body.stmts, Cont::Return);
    let mut m = lw.m;
    inline_branches(&mut m);
    drop_unused_macro_rules(&mut m);
    m.reachable = reachable(&m);
    m
}

impl Lowerer<'_> {
    fn new_block(&mut self, kind: BlockKind) -> BlockId {
        self.m.blocks.push(Block { kind, live_in: Vec::new(), body: Vec::new() });
        self.m.blocks.len() - 1
    }

    fn emit(&mut self, node: Node) {
        self.m.blocks[self.cur].body.push(node);
    }

    /// Continues in block `b`, a new piece of the machine (its own match arm): the items of the
    /// user blocks it is in are declared again there, innermost first, each name once.
    fn enter_block(&mut self, b: BlockId) {
        self.cur = b;
        self.m.source_order.push(b);
        let mut seen = BTreeSet::new();
        let mut items = Vec::new();
        for scope in self.item_scopes.iter().rev() {
            for item in scope.iter().rev() {
                let names = item_names(item);
                if names.is_empty() || names.iter().any(|n| !seen.contains(n)) {
                    items.push(item.clone());
                }
                seen.extend(names);
            }
        }
        for item in items.into_iter().rev() {
            self.emit_item(item);
        }
        for c in self.cursors.clone() {
            self.rebind_cursor_item(&c);
        }
    }

    /// In a piece of a `for` loop over `&v`/`v.iter()…`, the loop's item is borrowed from `v`
    /// again instead of being stored (a reference cannot be):
    ///
    /// ```text
    /// let p = match it.current_in(&v) { Some(x) => x, None => goto H };
    /// ```
    /// Not when the body declared a local of the same name since: that one is meant there.
    fn rebind_cursor_item(&mut self, c: &CursorLoop) {
        let still_visible = c.defs.iter().all(|d| {
            let name = self.m.bindings[*d].ident.to_string();
            self.resolve([name].into()).contains(d)
        });
        if !still_visible {
            return;
        }
        let krate = self.krate.clone();
        let (pat, base) = (&c.pat, &c.base);
        let it = self.m.bindings[c.it].ident.clone();
        let g = self.goto(c.head, Vec::new(), Span::call_site());
        let jump = format_ident!("__durable_goto_{}", g, span = Span::mixed_site());
        let v = format_ident!("__durable_item", span = Span::mixed_site());
        let stmt: Stmt = parse_quote!(
            let #pat = match #krate::__support_v1::ForCursor::current_in(&#it, #base) {
                ::core::option::Option::Some(#v) => #v,
                ::core::option::Option::None => #jump,
            };
        );
        let mut uses = self.resolve(names_in(base));
        uses.insert(c.it);
        self.emit(Node::Code { stmt, uses, defs: c.defs.clone(), gotos: vec![g] });
    }

    /// Declares `item` here and in every later piece of the current user block.
    fn declare_item(&mut self, item: syn::Item) {
        self.emit_item(item.clone());
        if let Some(scope) = self.item_scopes.last_mut() {
            scope.push(item);
        }
    }

    fn emit_item(&mut self, item: syn::Item) {
        // A `macro_rules!` names the locals in scope where it is declared.
        let uses = match &item {
            syn::Item::Macro(m) => self.resolve(crate::analyze::names_in_tokens(&m.mac.tokens)),
            _ => BTreeSet::new(),
        };
        self.emit(Node::Code { stmt: Stmt::Item(item), uses, defs: Vec::new(), gotos: Vec::new() });
    }

    fn visible(&self) -> HashMap<String, BindingId> {
        let mut v = HashMap::new();
        for scope in &self.scopes {
            v.extend(scope.iter().map(|(k, b)| (k.clone(), *b)));
        }
        v
    }

    fn goto(&mut self, target: BlockId, provides: Vec<BindingId>, span: Span) -> usize {
        let mut visible = self.visible();
        for b in &provides {
            visible.insert(self.m.bindings[*b].ident.to_string(), *b);
        }
        self.m.gotos.push(Goto { target, visible, provides, span });
        self.m.gotos.len() - 1
    }

    fn resolve(&self, names: BTreeSet<String>) -> BTreeSet<BindingId> {
        names
            .into_iter()
            .filter_map(|n| self.scopes.iter().rev().find_map(|s| s.get(&n).copied()))
            .collect()
    }

    fn define(&mut self, binding: Binding) -> BindingId {
        let name = binding.ident.to_string();
        self.m.bindings.push(binding);
        let id = self.m.bindings.len() - 1;
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name, id);
        }
        id
    }

    fn define_pat(&mut self, pat: &Pat, init: Option<&Expr>, irrefutable: bool) -> Vec<BindingId> {
        let init_borrow = init.and_then(borrow_of);
        // `let x: T` names the type of its single binding.
        let ty = match pat {
            Pat::Type(t) if matches!(&*t.pat, Pat::Ident(_)) => Some((*t.ty).clone()),
            _ => None,
        };
        pattern_bindings_in(pat, irrefutable)
            .into_iter()
            .map(|b| {
                let borrowed =
                    if b.by_ref { Some("is a `ref` binding (a reference)") } else { init_borrow };
                let name = b.ident.to_string();
                self.define(Binding {
                    ident: b.ident,
                    name,
                    mutable: b.mutable,
                    synthetic: false,
                    borrowed,
                    ty: ty.clone(),
                })
            })
            .collect()
    }

    fn temp(&mut self, what: &str, mutable: bool, span: Span) -> BindingId {
        self.temps += 1;
        let ident = format_ident!(
            "__durable_{}{}",
            what,
            self.temps,
            span = Span::mixed_site().located_at(span)
        );
        let index = self.next_index(&format!("#{what}"));
        let name = format!("{what}@{}#{index}", self.path.join("/"));
        self.m.bindings.push(Binding {
            ident,
            name,
            mutable,
            synthetic: true,
            borrowed: None,
            ty: None,
        });
        self.m.bindings.len() - 1
    }

    fn bring_into_scope(&mut self, b: BindingId) {
        let name = self.m.bindings[b].ident.to_string();
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name, b);
        }
    }

    fn temp_expr(&self, b: BindingId) -> Expr {
        let ident = &self.m.bindings[b].ident;
        parse_quote!(#ident)
    }

    fn next_index(&mut self, key: &str) -> usize {
        if self.counters.is_empty() {
            self.counters.push(HashMap::new());
        }
        let Some(counters) = self.counters.last_mut() else { return 0 };
        let n = counters.entry(key.to_owned()).or_insert(0);
        *n += 1;
        *n - 1
    }

    fn enter(&mut self, kind: &str) {
        let i = self.next_index(kind);
        self.path.push(format!("{kind}{i}"));
        self.counters.push(HashMap::new());
    }

    fn leave(&mut self) {
        self.path.pop();
        self.counters.pop();
    }

    // ----- statements -----

    /// A user block: its own scope of names, and if it declares items, its own Rust block, so
    /// that they are not visible outside it (`Node::Scope`).
    fn lower_block(&mut self, block: &syn::Block, cont: Cont) {
        self.scopes.push(HashMap::new());
        let has_items = block.stmts.iter().any(|s| matches!(s, Stmt::Item(i) if redeclarable(i)));
        let start = has_items.then(|| (self.cur, self.m.blocks[self.cur].body.len()));
        self.item_scopes.push(Vec::new());
        self.refuse_shadowing_hoists(&block.stmts);
        self.hoist_for_types(&block.stmts);
        for item in redeclarable_items(&block.stmts) {
            self.declare_item(item);
        }
        self.lower_stmts(&block.stmts, cont);
        self.item_scopes.pop();
        if let Some((b, i)) = start {
            let inner: Vec<Node> = self.m.blocks[b].body.drain(i..).collect();
            self.m.blocks[b].body.push(Node::Scope(inner));
        }
        self.scopes.pop();
    }

    /// Refuses an inner block's item that hoisting to the function would make visible where
    /// the name means something else: a type, `static` or `impl` of a block (and the `use`,
    /// `fn`, `const` and `type` items beside it) are declared once for the whole function, so a
    /// name they declare that the body also uses outside the block (for a module's item of the
    /// same name) would change meaning there.
    fn refuse_shadowing_hoists(&mut self, stmts: &[Stmt]) {
        if !stmts.iter().any(|s| matches!(s, Stmt::Item(i) if !redeclarable(i))) {
            return;
        }
        let inside: TokenStream = stmts.iter().map(ToTokens::to_token_stream).collect();
        for s in stmts {
            let Stmt::Item(item) = s else { continue };
            for name in declared_names(item) {
                if ident_count(&self.body, &name) > ident_count(&inside, &name) {
                    self.errors.at(
                        item,
                        format!(
                            "`{name}` is declared in this block, which the macro declares once for \
                         the whole function (the block's `.await`s split it), while the body \
                         also uses `{name}` outside the block; rename it or move it to the top \
                         of the function"
                        ),
                    );
                }
            }
        }
    }

    /// A block that declares a type, `impl` or `static` (hoisted to the function) also has its
    /// `use`, `fn`, `const` and `type` items copied there, since those hoisted items may name
    /// them (`use std::fmt; impl fmt::Display for S`).
    fn hoist_for_types(&mut self, stmts: &[Stmt]) {
        let hoists = stmts.iter().any(|s| matches!(s, Stmt::Item(i) if !redeclarable(i)));
        if hoists {
            self.m.items.extend(redeclarable_items(stmts));
        }
    }

    fn lower_stmts(&mut self, stmts: &[Stmt], cont: Cont) {
        let mut diverged = false;
        for (i, stmt) in stmts.iter().enumerate() {
            if let (true, Stmt::Expr(e, None)) = (i + 1 == stmts.len(), stmt) {
                self.lower_tail(e, cont);
                return;
            }
            self.lower_stmt(stmt);
            diverged = diverges(stmt);
        }
        if !diverged {
            self.finish(cont, None);
        }
    }

    fn lower_stmt(&mut self, stmt: &Stmt) {
        match stmt {
            // Declared at the start of their block (`lower_block`); a `macro_rules!` where it is
            // written, since it sees only what is declared before it.
            Stmt::Item(item @ syn::Item::Macro(m)) if m.ident.is_some() => {
                self.declare_item(item.clone());
            }
            Stmt::Item(item) if redeclarable(item) => {}
            Stmt::Item(item) => self.m.items.push(item.clone()),
            Stmt::Local(local) => self.lower_local(local),
            Stmt::Expr(e, semi) => {
                if !has_await(e) {
                    self.code(stmt.clone(), Vec::new());
                } else if is_control_flow(e) {
                    let join = self.new_block(BlockKind::Join);
                    self.lower_expr_to(e, Cont::Goto { target: join, value: None });
                    self.enter_block(join);
                } else {
                    let mut e = e.clone();
                    if !self.assign_from_control_flow(&mut e) {
                        self.lift(&mut e);
                    }
                    self.code(Stmt::Expr(e, *semi), Vec::new());
                }
            }
            Stmt::Macro(_) => self.code(stmt.clone(), Vec::new()),
        }
    }

    fn lower_local(&mut self, local: &syn::Local) {
        let Some(init) = &local.init else {
            return self.code_local(local.clone(), None);
        };
        if let Some((_, diverge)) = &init.diverge
            && has_await(&**diverge)
        {
            self.errors.at(
                diverge,
                "`.await` in the `else` of `let … else` is not supported; \
                    move the durable call into an `if let`/`match` arm",
            );
        }
        if !has_await(&*init.expr) {
            return self.code_local(local.clone(), Some(&init.expr));
        }
        let mut local2 = local.clone();
        let new_init = if is_control_flow(&init.expr) {
            let join = self.new_block(BlockKind::Join);
            let t = self.temp("value", false, init.expr.span_of());
            self.lower_expr_to(&init.expr, Cont::Goto { target: join, value: Some(t) });
            self.enter_block(join);
            self.bring_into_scope(t);
            self.temp_expr(t)
        } else {
            let mut e = (*init.expr).clone();
            self.lift(&mut e);
            e
        };
        if let Some(i) = local2.init.as_mut() {
            *i.expr = new_init;
        }
        self.code_local(local2, Some(&init.expr));
    }

    /// A `let` kept as written: uses are resolved before its pattern binds.
    fn code_local(&mut self, mut local: syn::Local, original_init: Option<&Expr>) {
        let mut names = BTreeSet::new();
        if let Some(init) = &local.init {
            names.extend(names_in(&*init.expr));
            if let Some((_, d)) = &init.diverge {
                names.extend(names_in(&**d));
            }
        }
        let uses = self.resolve(names);
        let gotos = self.rewrite(&mut local);
        let irrefutable = local.init.as_ref().is_none_or(|i| i.diverge.is_none());
        let defs = self.define_pat(&local.pat, original_init, irrefutable);
        self.emit(Node::Code { stmt: Stmt::Local(local), uses, defs, gotos });
    }

    /// A statement kept as written. `x = e;` kills `x` (liveness: the old value is not used);
    /// `expand` makes it a `let` where `x` is not bound.
    fn code(&mut self, mut stmt: Stmt, mut defs: Vec<BindingId>) {
        let uses = self.resolve(names_in(&stmt));
        if let Stmt::Expr(Expr::Assign(a), _) = &stmt
            && let Some(name) = crate::analyze::plain_local(&a.left)
            && let Some(b) = self.resolve([name].into()).into_iter().next()
        {
            defs.push(b);
        }
        let gotos = self.rewrite(&mut stmt);
        self.emit(Node::Code { stmt, uses, defs, gotos });
    }

    fn lower_tail(&mut self, e: &Expr, cont: Cont) {
        if !has_await(e) {
            return self.finish(cont, Some(e.clone()));
        }
        if is_control_flow(e) {
            return self.lower_expr_to(e, cont);
        }
        let mut e = e.clone();
        if !self.assign_from_control_flow(&mut e) {
            self.lift(&mut e);
        }
        self.finish(cont, Some(e));
    }

    /// `place = <if/match/loop/block with an await>` (or `place op= …`): the right side is
    /// lowered like a `let`'s initialiser into a temporary, and `e` becomes `place = t`.
    ///
    /// ```text
    /// v = match op.await? { p => A, .. }    (as `let t = match …`)    J: v = t;
    /// ```
    fn assign_from_control_flow(&mut self, e: &mut Expr) -> bool {
        let (left, right) = match e {
            Expr::Assign(a) => (&*a.left, &mut *a.right),
            Expr::Binary(b) if is_compound_assign(&b.op) => (&*b.left, &mut *b.right),
            _ => return false,
        };
        if has_await(left) || !is_control_flow(right) || !has_await(&*right) {
            return false;
        }
        let join = self.new_block(BlockKind::Join);
        let t = self.temp("value", false, right.span_of());
        self.lower_expr_to(right, Cont::Goto { target: join, value: Some(t) });
        self.enter_block(join);
        self.bring_into_scope(t);
        *right = self.temp_expr(t);
        true
    }

    /// Hands a value (or `()`) to the continuation.
    fn finish(&mut self, cont: Cont, value: Option<Expr>) {
        match cont {
            Cont::Return => {
                let mut expr = value.unwrap_or_else(|| parse_quote!(()));
                let uses = self.resolve(names_in(&expr));
                let gotos = self.rewrite(&mut expr);
                if gotos.is_empty() {
                    self.emit(Node::Return { expr, uses });
                } else {
                    let krate = &self.krate;
                    let stmt: Stmt = parse_quote!(return #krate::__support_v1::Step::Done(#expr););
                    self.emit(Node::Code { stmt, uses, defs: Vec::new(), gotos });
                }
            }
            Cont::Goto { target, value: Some(t) } => {
                let ident = self.m.bindings[t].ident.clone();
                let v = value.unwrap_or_else(|| parse_quote!(()));
                self.bring_into_scope(t);
                self.code(parse_quote!(let #ident = #v;), vec![t]);
                let g = self.goto(target, Vec::new(), Span::call_site());
                self.emit(Node::Goto(g));
            }
            Cont::Goto { target, value: None } => {
                if let Some(v) = value {
                    self.code(Stmt::Expr(v, Some(Default::default())), Vec::new());
                }
                let g = self.goto(target, Vec::new(), Span::call_site());
                self.emit(Node::Goto(g));
            }
        }
    }

    // ----- control flow -----

    fn lower_expr_to(&mut self, e: &Expr, cont: Cont) {
        match e {
            Expr::If(i) => self.lower_if(i, cont),
            Expr::Match(m) => self.lower_match(m, cont),
            Expr::Loop(_) | Expr::While(_) | Expr::ForLoop(_) => self.lower_loop(e, cont),
            Expr::Block(b) if b.label.is_none() => self.lower_block(&b.block, cont),
            Expr::Paren(p) => self.lower_expr_to(&p.expr, cont),
            Expr::Block(b) => {
                self.errors.at(
                    &b.label,
                    "a labelled block containing a durable `.await` is not \
                    supported; use a labelled `loop` with `break 'label value`",
                );
                self.finish(cont, None);
            }
            _ => self.lower_tail(e, cont),
        }
    }

    fn lower_if(&mut self, i: &syn::ExprIf, cont: Cont) {
        self.enter("if");
        let mut cond = (*i.cond).clone();
        self.lift(&mut cond);
        let cond_uses = self.resolve(names_in(&cond));
        let then_block = self.new_block(BlockKind::Branch);
        let else_block = self.new_block(BlockKind::Branch);
        let else_goto = self.goto(else_block, Vec::new(), Span::call_site());
        self.scopes.push(HashMap::new());
        let defs = let_patterns(&cond)
            .iter()
            .flat_map(|p| self.define_pat(p, None, false))
            .collect::<Vec<_>>();
        let then_goto = self.goto(then_block, Vec::new(), Span::call_site());
        let gotos = self.rewrite(&mut cond);
        self.add_gotos_to_uses(&gotos);
        self.emit(Node::If {
            cond,
            uses: cond_uses,
            defs,
            then: vec![Node::Goto(then_goto)],
            els: vec![Node::Goto(else_goto)],
        });
        self.cur = then_block;
        self.path.push("then".into());
        self.counters.push(HashMap::new());
        self.lower_block(&i.then_branch, cont);
        self.leave();
        self.scopes.pop();
        self.cur = else_block;
        self.path.push("else".into());
        self.counters.push(HashMap::new());
        match &i.else_branch {
            None => self.finish(cont, None),
            Some((_, e)) => self.lower_expr_to(e, cont),
        }
        self.leave();
        self.leave();
    }

    fn add_gotos_to_uses(&mut self, gotos: &[usize]) {
        if !gotos.is_empty() {
            self.errors.at_span(
                self.m.gotos[gotos[0]].span,
                "`break`/`continue` of a loop containing a durable `.await` cannot appear in a \
                 condition or scrutinee; move it into the body",
            );
        }
    }

    fn lower_match(&mut self, mt: &syn::ExprMatch, cont: Cont) {
        self.enter("match");
        let mut scrutinee = (*mt.expr).clone();
        self.lift(&mut scrutinee);
        let uses = self.resolve(names_in(&scrutinee));
        let gotos = self.rewrite(&mut scrutinee);
        self.add_gotos_to_uses(&gotos);
        let mut arms = Vec::new();
        let mut bodies = Vec::new();
        for arm in &mt.arms {
            let block = self.new_block(BlockKind::Branch);
            self.scopes.push(HashMap::new());
            let defs = self.define_pat(&arm.pat, None, false);
            let mut pat = arm.pat.clone();
            if let Pat::Guard(g) = &mut pat {
                if has_await(&*g.guard) {
                    self.errors.at(
                        &g.guard,
                        "a match guard cannot contain a durable `.await`; \
                        await before the `match` and bind the value",
                    );
                }
                let gotos = self.rewrite(&mut *g.guard);
                self.add_gotos_to_uses(&gotos);
            }
            let arm_uses = self.resolve(names_in(&pat));
            let g = self.goto(block, Vec::new(), Span::call_site());
            let scope = self.scopes.pop().unwrap_or_default();
            arms.push(Arm { pat, defs, uses: arm_uses, body: vec![Node::Goto(g)] });
            bodies.push((block, scope, &arm.body));
        }
        self.emit(Node::Match { scrutinee, uses, arms });
        for (i, (block, scope, body)) in bodies.into_iter().enumerate() {
            self.cur = block;
            self.scopes.push(scope);
            self.path.push(format!("arm{i}"));
            self.counters.push(HashMap::new());
            self.lower_expr_to(body, cont);
            self.leave();
            self.scopes.pop();
        }
        self.leave();
    }

    fn lower_loop(&mut self, e: &Expr, cont: Cont) {
        let exit = self.new_block(BlockKind::Join);
        let wants_value =
            matches!(e, Expr::Loop(_)) && !matches!(cont, Cont::Goto { value: None, .. });
        let value = wants_value.then(|| self.temp("break", false, Span::call_site()));
        let label = match e {
            Expr::Loop(l) => &l.label,
            Expr::While(w) => &w.label,
            Expr::ForLoop(f) => &f.label,
            _ => return self.lower_tail(e, cont),
        };
        let label = label.as_ref().map(|l| l.name.ident.to_string());
        let kind = match e {
            Expr::Loop(_) => "loop",
            Expr::While(_) => "while",
            _ => "for",
        };
        self.enter(kind);
        match e {
            Expr::Loop(l) => {
                let head = self.jump_to_new_head();
                self.loops.push(LoopFrame { label, head, exit, value });
                self.lower_block(&l.body, Cont::Goto { target: head, value: None });
            }
            Expr::While(w) => {
                let head = self.jump_to_new_head();
                let mut cond = (*w.cond).clone();
                self.lift(&mut cond);
                let uses = self.resolve(names_in(&cond));
                let body = self.new_block(BlockKind::Branch);
                let exit_goto = self.goto(exit, Vec::new(), Span::call_site());
                self.scopes.push(HashMap::new());
                let defs = let_patterns(&cond)
                    .iter()
                    .flat_map(|p| self.define_pat(p, None, false))
                    .collect::<Vec<_>>();
                let body_goto = self.goto(body, Vec::new(), Span::call_site());
                let gotos = self.rewrite(&mut cond);
                self.add_gotos_to_uses(&gotos);
                self.emit(Node::If {
                    cond,
                    uses,
                    defs,
                    then: vec![Node::Goto(body_goto)],
                    els: vec![Node::Goto(exit_goto)],
                });
                self.cur = body;
                self.loops.push(LoopFrame { label, head, exit, value });
                self.lower_block(&w.body, Cont::Goto { target: head, value: None });
                self.scopes.pop();
            }
            Expr::ForLoop(f) => {
                let mut iterable = (*f.expr).clone();
                if has_str_literal_items(&iterable) {
                    self.errors.at(
                        &iterable,
                        "the items of this `for` are `&str` literals, but the items still to visit \
                         are stored in the checkpoint, which needs owned values; iterate over \
                         `String`s, e.g. `[\"a\", \"b\"].map(String::from)`",
                    );
                }
                self.lift(&mut iterable);
                let span = f.expr.span_of();
                let (mut base, adapters) = peel_adapters(&iterable);
                let cursor = reborrowable(&base);
                if cursor {
                    self.freeze_operands(&mut base);
                }
                let it = self.temp("iter", true, span);
                let it_ident = self.m.bindings[it].ident.clone();
                let krate = self.krate.clone();
                let ty = match unparen(&base) {
                    Expr::Range(r) => match (&r.limits, &r.start, &r.end) {
                        (syn::RangeLimits::HalfOpen(_), Some(_), Some(_)) => Some("ForRange"),
                        (syn::RangeLimits::HalfOpen(_), Some(_), None) => Some("ForRangeFrom"),
                        (syn::RangeLimits::Closed(_), Some(_), Some(_)) => {
                            Some("ForRangeInclusive")
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let make = match ty {
                    Some(ty) => {
                        let ty = syn::Ident::new(ty, span);
                        quote::quote_spanned!(span=> #krate::__support_v1::#ty::new(#base))
                    }
                    None if cursor => {
                        quote::quote_spanned!(span=> #krate::__support_v1::ForCursor::new())
                    }
                    None => {
                        if let Some(why) = eager_hazard(&base) {
                            self.errors.at(&base, format!(
                                "this `for` loop's iterable is an iterator that cannot be stored: \
                                 its items would all be produced before the first iteration (the \
                                 items still to visit are stored in the checkpoint), and {why}; \
                                 collect them first (`let items: Vec<_> = ….collect();`, then \
                                 `for … in items`), or move the work into the loop body"
                            ));
                        }
                        // A stored iterator if it can be stored, else its items
                        // (`ForSource`); the check at the iterable, so that a failure is
                        // reported there.
                        // The whole check at one (mixed-site) span, the one the stored
                        // state's reads and writes are checked at: reported once.
                        let state =
                            syn::Ident::new("__durable_for", Span::mixed_site().located_at(span));
                        let check = respan(
                            quote::quote!(#krate::__support_v1::assert_for_state(&#state);),
                            span,
                        );
                        quote::quote_spanned!(span=> {
                            use #krate::__support_v1::{ForCollectItems as _, ForKeepIterator as _};
                            let #state = (&#krate::__support_v1::ForSource::new(#base)).for_state();
                            #check
                            #state
                        })
                    }
                };
                let uses = if cursor { BTreeSet::new() } else { self.resolve(names_in(&base)) };
                let mut stmt: Stmt = parse_quote!(let mut #it_ident = #make;);
                let gotos = self.rewrite(&mut stmt);
                self.bring_into_scope(it);
                self.emit(Node::Code { stmt, uses, defs: vec![it], gotos });
                let head = self.jump_to_new_head();
                let body = self.new_block(BlockKind::Branch);
                let exit_goto = self.goto(exit, Vec::new(), Span::call_site());
                self.scopes.push(HashMap::new());
                let pat = (*f.pat).clone();
                // With adapters, the arm binds the base's item; the adapters and the user's
                // pattern follow in the body.
                let item = (!adapters.is_empty()).then(|| self.temp("item", false, span));
                let (arm_pat, defs) = match item {
                    Some(t) => {
                        self.bring_into_scope(t);
                        let ident = self.m.bindings[t].ident.clone();
                        (parse_quote!(#ident), vec![t])
                    }
                    None => (pat.clone(), self.define_pat(&pat, None, true)),
                };
                let pat_defs = defs.clone();
                let body_goto = self.goto(body, Vec::new(), Span::call_site());
                let (scrutinee, uses): (Expr, BTreeSet<BindingId>) = if cursor {
                    let mut uses = self.resolve(names_in(&base));
                    uses.insert(it);
                    // At the iterable: a `StableOrder` failure (a `HashMap`) is reported there.
                    let next_in =
                        respan(quote::quote!(#krate::__support_v1::ForCursor::next_in), span);
                    (parse_quote!(#next_in(&mut #it_ident, #base)), uses)
                } else {
                    (
                        parse_quote!(#krate::__support_v1::ForIter::next_item(&mut #it_ident)),
                        [it].into_iter().collect(),
                    )
                };
                self.emit(Node::Match {
                    scrutinee,
                    uses,
                    arms: vec![
                        Arm {
                            pat: parse_quote!(::core::option::Option::Some(#arm_pat)),
                            defs,
                            uses: BTreeSet::new(),
                            body: vec![Node::Goto(body_goto)],
                        },
                        Arm {
                            pat: parse_quote!(::core::option::Option::None),
                            defs: Vec::new(),
                            uses: BTreeSet::new(),
                            body: vec![Node::Goto(exit_goto)],
                        },
                    ],
                });
                self.cur = body;
                self.loops.push(LoopFrame { label, head, exit, value });
                if let Some(t) = item {
                    // The adapters, on this one item: closures are typed as in the chain.
                    let x = self.m.bindings[t].ident.clone();
                    let mut chain: Expr = parse_quote!(::core::iter::once(#x));
                    for (method, f) in &adapters {
                        let method = format_ident!("{}", method, span = f.span_of());
                        chain = parse_quote!(#chain.#method(#f));
                    }
                    let y = self.temp("item", false, span);
                    let y_ident = self.m.bindings[y].ident.clone();
                    self.bring_into_scope(y);
                    let stmt: Stmt = parse_quote!(
                        let #y_ident = match ::core::iter::Iterator::next(&mut #chain) {
                            ::core::option::Option::Some(__durable_v) => __durable_v,
                            ::core::option::Option::None => continue,
                        };
                    );
                    self.code(stmt, vec![y]);
                    let bind: Stmt = parse_quote!(let #pat = #y_ident;);
                    if let Stmt::Local(local) = bind {
                        self.code_local(local, None);
                    }
                }
                // Items borrowed from the collection are borrowed again after each await.
                let rebinds = cursor
                    && adapters.is_empty()
                    && pattern_bindings_in(&pat, true).iter().all(|b| !b.mutable && !b.by_ref);
                if rebinds {
                    self.cursors.push(CursorLoop {
                        pat: pat.clone(),
                        defs: pat_defs,
                        it,
                        base: base.clone(),
                        head,
                    });
                }
                self.lower_block(&f.body, Cont::Goto { target: head, value: None });
                if rebinds {
                    self.cursors.pop();
                }
                self.scopes.pop();
            }
            _ => {}
        }
        self.loops.pop();
        self.leave();
        self.enter_block(exit);
        let v = value.map(|t| {
            self.bring_into_scope(t);
            self.temp_expr(t)
        });
        self.finish(cont, v);
    }

    fn jump_to_new_head(&mut self) -> BlockId {
        let head = self.new_block(BlockKind::Join);
        let g = self.goto(head, Vec::new(), Span::call_site());
        self.emit(Node::Goto(g));
        self.enter_block(head);
        head
    }

    // ----- awaits inside expressions -----

    /// Lifts the durable awaits of `e` into suspension points, in evaluation order, replacing
    /// each with the local that receives its value. An operand evaluated before an await in
    /// Rust is evaluated into a temporary before the suspension (`spill`), so its effects and
    /// panics come first and it sees the values from before the await.
    fn lift(&mut self, e: &mut Expr) {
        if !has_await(e) {
            return;
        }
        match e {
            Expr::Await(_) => self.lift_await(e, false),
            Expr::Try(t) if matches!(&*t.expr, Expr::Await(_)) => self.lift_await(e, true),
            Expr::Try(t) => self.lift(&mut t.expr),
            Expr::Paren(x) => self.lift(&mut x.expr),
            Expr::Group(x) => self.lift(&mut x.expr),
            Expr::Reference(x) => self.lift(&mut x.expr),
            Expr::Unary(x) => self.lift(&mut x.expr),
            Expr::Cast(x) => self.lift(&mut x.expr),
            Expr::Field(x) => self.lift(&mut x.base),
            Expr::Let(x) => self.lift(&mut x.expr),
            Expr::Return(x) => {
                if let Some(v) = &mut x.expr {
                    self.lift(v);
                }
            }
            Expr::Binary(b) => {
                self.lift(&mut b.left);
                if matches!(b.op, syn::BinOp::And(_) | syn::BinOp::Or(_)) && has_await(&*b.right) {
                    self.errors.at(
                        &b.right,
                        "a durable `.await` on the right of `&&`/`||` runs \
                        only sometimes; write it as an `if`",
                    );
                    return;
                }
                if has_await(&*b.right) {
                    // Comparisons borrow their operands and compound assignments write to a
                    // place: those stay places; arithmetic takes the left operand's value.
                    let by_value = !matches!(
                        b.op,
                        syn::BinOp::Eq(_)
                            | syn::BinOp::Ne(_)
                            | syn::BinOp::Lt(_)
                            | syn::BinOp::Le(_)
                            | syn::BinOp::Gt(_)
                            | syn::BinOp::Ge(_)
                    ) && !is_compound_assign(&b.op);
                    if !by_value && is_place(&b.left) {
                        self.check_place_before_await(&b.left, &b.right, is_compound_assign(&b.op));
                    }
                    self.spill(&mut b.left, by_value);
                }
                self.lift(&mut b.right);
            }
            Expr::Index(x) => {
                self.lift(&mut x.expr);
                if has_await(&*x.index) {
                    self.spill(&mut x.expr, false);
                }
                self.lift(&mut x.index);
            }
            Expr::Call(c) => {
                self.lift(&mut c.func);
                let mut rest: Vec<&mut Expr> = c.args.iter_mut().collect();
                if rest.iter().any(|a| has_await(&**a)) {
                    self.spill(&mut c.func, false);
                }
                self.lift_in_order(&mut rest);
            }
            Expr::MethodCall(c) => {
                self.lift(&mut c.receiver);
                let mut rest: Vec<&mut Expr> = c.args.iter_mut().collect();
                if rest.iter().any(|a| has_await(&**a)) {
                    if is_place(&c.receiver) {
                        for a in &rest {
                            self.check_place_before_await(&c.receiver, a, false);
                        }
                    }
                    self.spill(&mut c.receiver, false);
                }
                self.lift_in_order(&mut rest);
            }
            Expr::Tuple(t) => self.lift_in_order(&mut t.elems.iter_mut().collect::<Vec<_>>()),
            Expr::Array(t) => self.lift_in_order(&mut t.elems.iter_mut().collect::<Vec<_>>()),
            Expr::Struct(s) => {
                // A shorthand field (`Rec { a, .. }`) prints as its name alone, whatever its
                // expression became: spilled into a temporary, it must print `a: temporary`.
                for f in &mut s.fields {
                    f.colon_token.get_or_insert_with(Default::default);
                }
                let mut parts: Vec<&mut Expr> = s.fields.iter_mut().map(|f| &mut f.expr).collect();
                if let Some(r) = &mut s.rest {
                    parts.push(&mut **r);
                }
                self.lift_in_order(&mut parts);
            }
            Expr::Range(r) => {
                let mut parts: Vec<&mut Expr> = Vec::new();
                if let Some(x) = &mut r.start {
                    parts.push(&mut **x);
                }
                if let Some(x) = &mut r.end {
                    parts.push(&mut **x);
                }
                self.lift_in_order(&mut parts);
            }
            Expr::Assign(a) => {
                self.lift(&mut a.right);
                if has_await(&*a.left) {
                    self.errors.at(&a.left, "a durable `.await` cannot be on the left of `=`");
                }
            }
            other => {
                let what = kind_name(other);
                self.errors.at(&*other, format!(
                    "a durable `.await` inside {what} that is part of a larger expression is not \
                     supported; make it a statement of its own, e.g. `let value = {what} …;`, and \
                     use `value`"
                ));
            }
        }
    }

    /// Refuses a place that stays a place across the `.await` in `later` (a comparison's
    /// operand, a method's receiver, the target of `op=`) when the order of the two cannot be
    /// kept: `later` changes a local the place reads (`x == f(&mut x).await?`: Rust reads `x`
    /// first for a number), or, for `op=`, the place's index runs code (Rust evaluates it before
    /// the right side for an overloaded `op=`, after it for numbers; the macro cannot tell which).
    fn check_place_before_await(&mut self, place: &Expr, later: &Expr, assigned: bool) {
        let read = names_in(place);
        let changed = changed_locals(later);
        if let Some(name) = changed.iter().find(|n| read.contains(*n)) {
            self.errors.at(
                place,
                format!(
                    "`{name}` is read here, but the expression with the `.await` after it changes \
                 `{name}` first, which would be read after the change; read it into a local \
                 before, e.g. `let {name}_before = {name};`"
                ),
            );
        } else if assigned && place_runs_code(place) {
            self.errors.at(
                place,
                "the index of this place is evaluated after the `.await` on \
                 the right of the assignment, where Rust may evaluate it before; compute the \
                 index into a local first",
            );
        }
    }

    /// Operands evaluated left to right by value (arguments, elements, fields): each one with an
    /// await after it is evaluated into a temporary first.
    fn lift_in_order(&mut self, parts: &mut [&mut Expr]) {
        for i in 0..parts.len() {
            self.lift(parts[i]);
            if parts[i + 1..].iter().any(|p| has_await(&**p)) {
                self.spill(parts[i], true);
            }
        }
    }

    /// Evaluates `e` (its awaits already lifted) into a temporary now, because an await that
    /// follows it in the same expression suspends before the expression completes:
    ///
    /// ```text
    /// a / b + op.await?            let t = a / b;  suspend P(op)   P: t + v?
    /// ```
    /// Left alone: literals, paths that are not locals (constants, functions), closures, and
    /// places where the context borrows or writes (`by_value == false`: a method's receiver,
    /// a comparison's operand, a borrowed `&x`), which Rust does not copy either.
    fn spill(&mut self, e: &mut Expr, by_value: bool) {
        match e {
            Expr::Lit(_) | Expr::Closure(_) => return,
            Expr::Paren(p) => return self.spill(&mut p.expr, by_value),
            Expr::Reference(r) => return self.spill(&mut r.expr, false),
            Expr::Path(p) if p.qself.is_none() => {
                // A temporary of the lowering (an awaited value) cannot change meanwhile.
                let local = p.path.get_ident().and_then(|i| {
                    let name = i.to_string();
                    self.scopes.iter().rev().find_map(|s| s.get(&name).copied())
                });
                if local.is_none_or(|b| self.m.bindings[b].synthetic) || !by_value {
                    return;
                }
            }
            Expr::Path(_) => return,
            _ if !by_value && is_place(e) => return,
            _ => {}
        }
        let t = self.temp("operand", true, e.span_of());
        let ident = self.m.bindings[t].ident.clone();
        let value = std::mem::replace(e, self.temp_expr(t));
        self.code(parse_quote!(let mut #ident = #value;), vec![t]);
        self.bring_into_scope(t);
    }

    /// The operands of an iterable borrowed again at every iteration (a `for` over `&v[lo..]`
    /// or `v.iter().take(n)`) evaluated once, now, into temporaries, as plain Rust evaluates
    /// them once before the loop: the body may change `lo` or `n`. The places borrowed stay
    /// places (the body cannot change them while they are borrowed).
    fn freeze_operands(&mut self, e: &mut Expr) {
        match e {
            Expr::Paren(p) => self.freeze_operands(&mut p.expr),
            Expr::Group(g) => self.freeze_operands(&mut g.expr),
            Expr::Reference(r) => self.freeze_operands(&mut r.expr),
            Expr::Field(f) => self.freeze_operands(&mut f.base),
            Expr::Unary(u) => self.freeze_operands(&mut u.expr),
            Expr::Index(i) => {
                self.freeze_operands(&mut i.expr);
                self.freeze(&mut i.index);
            }
            Expr::MethodCall(c) => {
                self.freeze_operands(&mut c.receiver);
                for a in &mut c.args {
                    self.freeze(a);
                }
            }
            _ => {}
        }
    }

    /// `e` evaluated now into a temporary that stands for it, cloned at each use; a range
    /// freezes its bounds (a `RangeFull` or a range type need not be storable).
    fn freeze(&mut self, e: &mut Expr) {
        match e {
            Expr::Lit(_) => {}
            Expr::Paren(p) => self.freeze(&mut p.expr),
            Expr::Range(r) => {
                for bound in [&mut r.start, &mut r.end].into_iter().flatten() {
                    self.freeze(bound);
                }
            }
            _ => {
                let t = self.temp("operand", false, e.span_of());
                let ident = self.m.bindings[t].ident.clone();
                let value =
                    std::mem::replace(e, parse_quote!(::core::clone::Clone::clone(&#ident)));
                self.code(parse_quote!(let #ident = #value;), vec![t]);
                self.bring_into_scope(t);
            }
        }
    }

    fn lift_await(&mut self, e: &mut Expr, try_op: bool) {
        let await_expr = match &mut *e {
            Expr::Try(t) => &mut *t.expr,
            other => other,
        };
        let Expr::Await(aw) = await_expr else { return };
        let span = aw.await_token.span;
        self.lift(&mut aw.base);
        let mut op = (*aw.base).clone();
        let uses = self.resolve(names_in(&op));
        let gotos = self.rewrite(&mut op);
        self.add_gotos_to_uses(&gotos);
        let desc = describe_op(&op);
        let n = self.next_index(&desc);
        let mut identity = self.path.join("/");
        if !identity.is_empty() {
            identity.push('/');
        }
        identity.push_str(&format!("{desc}#{n}"));
        let value = self.temp("awaited", false, span);
        let point = self.m.points.len();
        let resume = self.new_block(BlockKind::Resume(point));
        let visible = self.visible();
        self.m.points.push(Point {
            identity,
            operation: desc,
            op,
            uses,
            value,
            try_op,
            resume,
            visible,
            span,
        });
        self.emit(Node::Suspend(point));
        self.enter_block(resume);
        self.bring_into_scope(value);
        *e = self.temp_expr(value);
    }

    // ----- verbatim code -----

    /// Rewrites `?`, `return`, and `break`/`continue` of lowered loops in user code; returns the
    /// gotos it created.
    fn rewrite<T: Rewritable>(&mut self, node: &mut T) -> Vec<usize> {
        let mut r = Rewrite { lw: self, depth: 0, labels: Vec::new(), gotos: Vec::new() };
        node.rewrite_with(&mut r);
        r.gotos
    }
}

pub(crate) trait Rewritable {
    fn rewrite_with(&mut self, r: &mut Rewrite<'_, '_>);
}
impl Rewritable for Expr {
    fn rewrite_with(&mut self, r: &mut Rewrite<'_, '_>) {
        r.visit_expr_mut(self);
    }
}
impl Rewritable for Stmt {
    fn rewrite_with(&mut self, r: &mut Rewrite<'_, '_>) {
        r.visit_stmt_mut(self);
    }
}
impl Rewritable for syn::Local {
    fn rewrite_with(&mut self, r: &mut Rewrite<'_, '_>) {
        r.visit_local_mut(self);
    }
}

/// The rewrite of user code. Not entered: closures and async blocks (their `?`, `return` and
/// `break` are their own), nested items. Loops written in user code are tracked so that a
/// `break` inside them is left alone.
pub(crate) struct Rewrite<'l, 'a> {
    lw: &'l mut Lowerer<'a>,
    depth: usize,
    labels: Vec<String>,
    gotos: Vec<usize>,
}

impl Rewrite<'_, '_> {
    fn target(&self, label: Option<&syn::Lifetime>) -> Option<LoopFrame> {
        match label {
            Some(l) => {
                let name = l.ident.to_string();
                if self.labels.contains(&name) {
                    return None;
                }
                self.lw
                    .loops
                    .iter()
                    .rev()
                    .find(|f| f.label.as_deref() == Some(name.as_str()))
                    .cloned()
            }
            None if self.depth > 0 => None,
            None => self.lw.loops.last().cloned(),
        }
    }

    fn jump(&mut self, target: BlockId, provides: Vec<BindingId>, span: Span) -> Expr {
        let g = self.lw.goto(target, provides, span);
        self.gotos.push(g);
        let ident = format_ident!("__durable_goto_{}", g, span = Span::mixed_site());
        parse_quote!(#ident)
    }

    fn rewrite_macro(&mut self, mac: &mut syn::Macro) {
        use syn::parse::Parser;
        let name = mac.path.segments.last().map(|s| s.ident.to_string());
        // Its `continue` or `break` would reach the state machine's own loop, not the user's
        // loop, which the lowering has taken apart into pieces.
        if self.depth == 0
            && !self.lw.loops.is_empty()
            && name.as_ref().is_some_and(|n| self.lw.loop_control_macros.contains(n))
        {
            self.lw.errors.at(
                &mac.path,
                format!(
                    "`{}!` expands to `break` or `continue`, which cannot leave a loop whose body \
                 awaits from inside a macro; write the `break` or `continue` at the call site \
                 (e.g. `if … {{ continue; }}`)",
                    name.as_deref().unwrap_or_default()
                ),
            );
        }
        // Their arguments are text, never run: `stringify!(f(x)?)` is "f(x)?" in plain Rust.
        if matches!(name.as_deref(), Some("stringify" | "concat")) {
            return;
        }
        let parser = syn::punctuated::Punctuated::<Expr, syn::Token![,]>::parse_terminated;
        if let Ok(mut args) = parser.parse2(mac.tokens.clone()) {
            let before = self.gotos.len();
            for a in args.iter_mut() {
                self.visit_expr_mut(a);
            }
            if self.gotos.len() != before
                || args.to_token_stream().to_string() != mac.tokens.to_string()
            {
                // `assert!(cond)` says "assertion failed: " and the condition's text: the text
                // the user wrote, not the rewritten one.
                if matches!(name.as_deref(), Some("assert" | "debug_assert")) && args.len() == 1 {
                    let original = mac.tokens.clone();
                    args.push(parse_quote!("assertion failed: {}"));
                    args.push(parse_quote!(::core::stringify!(#original)));
                }
                mac.tokens = args.to_token_stream();
            }
        }
    }
}

impl VisitMut for Rewrite<'_, '_> {
    fn visit_expr_mut(&mut self, e: &mut Expr) {
        let krate = self.lw.krate.clone();
        match e {
            Expr::Closure(_) | Expr::Async(_) => {}
            Expr::Try(t) => {
                self.visit_expr_mut(&mut t.expr);
                let inner = &t.expr;
                let (v, err) = (
                    format_ident!("__durable_ok", span = Span::mixed_site()),
                    format_ident!("__durable_err", span = Span::mixed_site()),
                );
                let q = t.question_token.span;
                let convert = quote::quote_spanned!(q=> ::core::convert::From::from(#err));
                *e = parse_quote!(match #inner {
                    ::core::result::Result::Ok(#v) => #v,
                    ::core::result::Result::Err(#err) => return #krate::__support_v1::Step::Done(
                        ::core::result::Result::Err(#convert)),
                });
            }
            Expr::Return(r) => {
                if let Some(v) = &mut r.expr {
                    self.visit_expr_mut(v);
                }
                let v = r.expr.clone().map(|v| *v).unwrap_or_else(|| parse_quote!(()));
                *e = parse_quote!(return #krate::__support_v1::Step::Done(#v));
            }
            Expr::Break(b) => {
                if let Some(v) = &mut b.expr {
                    self.visit_expr_mut(v);
                }
                if let Some(frame) = self.target(b.label.as_ref()) {
                    let span = b.break_token.span;
                    *e = match (frame.value, b.expr.clone()) {
                        (Some(t), v) => {
                            let ident = self.lw.m.bindings[t].ident.clone();
                            let v = v.map(|v| *v).unwrap_or_else(|| parse_quote!(()));
                            let jump = self.jump(frame.exit, vec![t], span);
                            parse_quote!({ let #ident = #v; #jump })
                        }
                        (None, Some(v)) => {
                            let jump = self.jump(frame.exit, Vec::new(), span);
                            parse_quote!({ #v; #jump })
                        }
                        (None, None) => self.jump(frame.exit, Vec::new(), span),
                    };
                }
            }
            Expr::Continue(c) => {
                if let Some(frame) = self.target(c.label.as_ref()) {
                    *e = self.jump(frame.head, Vec::new(), c.continue_token.span);
                }
            }
            Expr::Loop(l) => {
                self.enter_loop(l.label.as_ref(), |s| s.visit_block_mut(&mut l.body));
            }
            Expr::While(w) => {
                let label = w.label.clone();
                self.enter_loop(label.as_ref(), |s| {
                    s.visit_expr_mut(&mut w.cond);
                    s.visit_block_mut(&mut w.body);
                });
            }
            Expr::ForLoop(f) => {
                self.visit_expr_mut(&mut f.expr);
                let label = f.label.clone();
                self.enter_loop(label.as_ref(), |s| s.visit_block_mut(&mut f.body));
            }
            Expr::Block(b) if b.label.is_some() => {
                let name = b.label.as_ref().map(|l| l.name.ident.to_string()).unwrap_or_default();
                self.labels.push(name);
                self.visit_block_mut(&mut b.block);
                self.labels.pop();
            }
            Expr::Macro(m) => self.rewrite_macro(&mut m.mac),
            _ => visit_mut::visit_expr_mut(self, e),
        }
    }

    fn visit_stmt_macro_mut(&mut self, m: &mut syn::StmtMacro) {
        self.rewrite_macro(&mut m.mac);
    }

    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
}

impl Rewrite<'_, '_> {
    fn enter_loop(&mut self, label: Option<&syn::Label>, f: impl FnOnce(&mut Self)) {
        let name = label.map(|l| l.name.ident.to_string());
        if let Some(n) = &name {
            self.labels.push(n.clone());
        }
        self.depth += 1;
        f(self);
        self.depth -= 1;
        if name.is_some() {
            self.labels.pop();
        }
    }
}

// ----- helpers -----

trait SpanOf {
    fn span_of(&self) -> Span;
}
impl<T: ToTokens> SpanOf for T {
    fn span_of(&self) -> Span {
        self.to_token_stream().into_iter().next().map_or_else(Span::call_site, |t| t.span())
    }
}

fn is_control_flow(e: &Expr) -> bool {
    match e {
        Expr::If(_)
        | Expr::Match(_)
        | Expr::Loop(_)
        | Expr::While(_)
        | Expr::ForLoop(_)
        | Expr::Block(_) => true,
        Expr::Paren(p) => is_control_flow(&p.expr),
        _ => false,
    }
}

/// The lazy adapters at the end of a `for` loop's iterable (`base.map(f).filter(p)`), applied
/// to each item in turn as the loop runs: `map`, `filter`, `filter_map`, `inspect` with a
/// closure that is not `move` (evaluated again for each item) or a path.
fn peel_adapters(e: &Expr) -> (Expr, Vec<(String, Expr)>) {
    let mut adapters = Vec::new();
    let mut cur = e;
    while let Expr::MethodCall(mc) = cur {
        let method = mc.method.to_string();
        let applies = ["map", "filter", "filter_map", "inspect"].contains(&method.as_str())
            && mc.turbofish.is_none()
            && mc.args.len() == 1
            && match &mc.args[0] {
                Expr::Closure(c) => c.capture.is_none(),
                Expr::Path(_) => true,
                _ => false,
            };
        // `[a, b].map(f)` is an array's eager `map`, not an iterator's.
        if !applies || !looks_like_iterator(&mc.receiver) {
            break;
        }
        adapters.push((method, mc.args[0].clone()));
        cur = &mc.receiver;
    }
    adapters.reverse();
    (cur.clone(), adapters)
}

/// Whether an expression is, by its shape, an iterator (so `.map` on it is `Iterator::map`).
fn looks_like_iterator(e: &Expr) -> bool {
    const ITERATORS: &[&str] = &[
        "iter",
        "iter_mut",
        "into_iter",
        "keys",
        "values",
        "values_mut",
        "into_keys",
        "into_values",
        "chars",
        "bytes",
        "char_indices",
        "lines",
        "split_whitespace",
        "drain",
        "windows",
        "chunks",
        "enumerate",
        "rev",
        "skip",
        "take",
        "step_by",
        "zip",
        "chain",
        "copied",
        "cloned",
        "map",
        "filter",
        "filter_map",
        "inspect",
        "skip_while",
        "take_while",
        "flat_map",
        "flatten",
        "peekable",
    ];
    match unparen(e) {
        Expr::Range(_) => true,
        Expr::MethodCall(mc) => ITERATORS.contains(&mc.method.to_string().as_str()),
        _ => false,
    }
}

/// An iterable that borrows a stored local and can be borrowed again at each iteration
/// without effects: `&v`, `&mut v`, `v.iter()`, `v.iter().enumerate()`, `s.chars()`….
fn reborrowable(e: &Expr) -> bool {
    const SOURCES: &[&str] = &[
        "iter",
        "iter_mut",
        "keys",
        "values",
        "values_mut",
        "chars",
        "bytes",
        "char_indices",
        "lines",
        "split_whitespace",
        "windows",
        "chunks",
        "chunks_exact",
    ];
    const ADAPTERS: &[&str] = &["enumerate", "rev", "skip", "step_by", "take", "copied", "cloned"];
    match e {
        Expr::Paren(p) => reborrowable(&p.expr),
        Expr::Reference(r) => is_place(&r.expr),
        Expr::MethodCall(mc) => {
            let method = mc.method.to_string();
            let plain_args = mc.args.iter().all(|a| matches!(a, Expr::Lit(_) | Expr::Path(_)));
            plain_args
                && if SOURCES.contains(&method.as_str()) {
                    is_place(&mc.receiver)
                } else {
                    ADAPTERS.contains(&method.as_str()) && reborrowable(&mc.receiver)
                }
        }
        _ => false,
    }
}

/// `tokens` with every token at `span`'s location (resolved at the mixed site).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    let span = Span::mixed_site().located_at(span);
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = proc_macro2::TokenTree::Group(group);
            }
            tt.set_span(span);
            tt
        })
        .collect()
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        e => e,
    }
}

/// The locals an expression assigns, assigns with `op=` or borrows mutably (`&mut x`), by name
/// (closures included: one called there may change them).
fn changed_locals(e: &Expr) -> Vec<String> {
    struct Find(Vec<String>);
    fn root(e: &Expr) -> Option<String> {
        match e {
            Expr::Path(p) => p.path.get_ident().map(ToString::to_string),
            Expr::Paren(p) => root(&p.expr),
            Expr::Field(f) => root(&f.base),
            Expr::Index(i) => root(&i.expr),
            Expr::Unary(u) => root(&u.expr),
            _ => None,
        }
    }
    impl<'a> syn::visit::Visit<'a> for Find {
        fn visit_expr(&mut self, e: &'a Expr) {
            let target = match e {
                Expr::Assign(a) => root(&a.left),
                Expr::Binary(b) if is_compound_assign(&b.op) => root(&b.left),
                Expr::Reference(r) if r.mutability.is_some() => root(&r.expr),
                _ => None,
            };
            self.0.extend(target);
            syn::visit::visit_expr(self, e);
        }
    }
    let mut find = Find(Vec::new());
    syn::visit::Visit::visit_expr(&mut find, e);
    find.0
}

/// Whether evaluating a place runs code: an index that is not a local or a literal.
fn place_runs_code(e: &Expr) -> bool {
    match e {
        Expr::Paren(p) => place_runs_code(&p.expr),
        Expr::Field(f) => place_runs_code(&f.base),
        Expr::Unary(u) => place_runs_code(&u.expr),
        Expr::Index(i) => {
            !matches!(unparen(&i.index), Expr::Path(_) | Expr::Lit(_)) || place_runs_code(&i.expr)
        }
        _ => false,
    }
}

/// A place expression: a local, a field, an element or a dereference of one.
fn is_place(e: &Expr) -> bool {
    match e {
        Expr::Path(_) => true,
        Expr::Paren(p) => is_place(&p.expr),
        Expr::Group(g) => is_place(&g.expr),
        Expr::Field(f) => is_place(&f.base),
        Expr::Index(i) => is_place(&i.expr),
        Expr::Unary(u) => matches!(u.op, syn::UnOp::Deref(_)) && is_place(&u.expr),
        _ => false,
    }
}

fn is_compound_assign(op: &syn::BinOp) -> bool {
    use syn::BinOp as B;
    matches!(
        op,
        B::AddAssign(_)
            | B::SubAssign(_)
            | B::MulAssign(_)
            | B::DivAssign(_)
            | B::RemAssign(_)
            | B::BitXorAssign(_)
            | B::BitAndAssign(_)
            | B::BitOrAssign(_)
            | B::ShlAssign(_)
            | B::ShrAssign(_)
    )
}

fn kind_name(e: &Expr) -> &'static str {
    match e {
        Expr::If(_) => "an `if`",
        Expr::Match(_) => "a `match`",
        Expr::Loop(_) | Expr::While(_) | Expr::ForLoop(_) => "a loop",
        Expr::Block(_) | Expr::Unsafe(_) => "a block",
        _ => "this expression",
    }
}

/// Whether a statement certainly does not complete normally.
fn diverges(stmt: &Stmt) -> bool {
    let e = match stmt {
        Stmt::Expr(e, _) => e,
        Stmt::Macro(m) => {
            return m.mac.path.get_ident().is_some_and(|i| {
                ["panic", "unreachable", "todo", "unimplemented"].iter().any(|n| i == n)
            });
        }
        _ => return false,
    };
    match e {
        Expr::Return(_) | Expr::Break(_) | Expr::Continue(_) => true,
        Expr::Macro(m) => m.mac.path.get_ident().is_some_and(|i| {
            ["panic", "unreachable", "todo", "unimplemented"].iter().any(|n| i == n)
        }),
        _ => false,
    }
}

/// An array or `vec!` of string literals.
/// Why collecting the items of `e`, an iterable that may not be storable, before its `for`
/// loop would not do what the loop does in plain Rust: a closure in the chain (it would run for
/// every item before the first iteration), or a source without end and no `take` after it (the
/// collection would never end). `None` when neither is seen; trailing `map`s and `filter`s are
/// peeled off before (they run per item in the body).
fn eager_hazard(e: &Expr) -> Option<&'static str> {
    let (mut unbounded, mut bounded) = (false, false);
    let mut cur = e;
    loop {
        match cur {
            Expr::Paren(p) => cur = &p.expr,
            Expr::Group(g) => cur = &g.expr,
            Expr::MethodCall(mc) => {
                let method = mc.method.to_string();
                if mc.args.iter().any(|a| matches!(unparen(a), Expr::Closure(_))) {
                    return Some("the closures in its chain would run for all of them at once");
                }
                // A `take` or `zip` after (outside) an endless part bounds it.
                bounded |= ["take", "zip"].contains(&method.as_str()) && !unbounded;
                unbounded |= method == "cycle";
                cur = &mc.receiver;
            }
            Expr::Call(c) => {
                if c.args.iter().any(|a| matches!(unparen(a), Expr::Closure(_))) {
                    return Some("the closure it is made from would run for all of them at once");
                }
                let unending = ["repeat", "repeat_with", "from_fn", "successors"];
                unbounded |= matches!(&*c.func, Expr::Path(p)
                    if p.path.segments.last().is_some_and(|s| unending.contains(&s.ident.to_string().as_str())));
                break;
            }
            Expr::Range(r) => {
                unbounded |= r.end.is_none() && !std::ptr::eq(cur, e);
                break;
            }
            _ => break,
        }
    }
    (unbounded && !bounded).then_some("it has no end")
}

fn has_str_literal_items(e: &Expr) -> bool {
    let is_str = |e: &Expr| matches!(e, Expr::Lit(l) if matches!(l.lit, syn::Lit::Str(_)));
    match e {
        Expr::Array(a) => a.elems.iter().any(is_str),
        Expr::Reference(r) => has_str_literal_items(&r.expr),
        Expr::Paren(p) => has_str_literal_items(&p.expr),
        Expr::Macro(m) if m.mac.path.is_ident("vec") => {
            use syn::parse::Parser;
            let parser = syn::punctuated::Punctuated::<Expr, syn::Token![,]>::parse_terminated;
            parser.parse2(m.mac.tokens.clone()).is_ok_and(|args| args.iter().any(is_str))
        }
        _ => false,
    }
}

/// What a reference-valued initialiser makes its binding.
fn borrow_of(e: &Expr) -> Option<&'static str> {
    match e {
        Expr::Reference(_) => Some("is a reference"),
        Expr::Lit(l) if matches!(l.lit, syn::Lit::Str(_) | syn::Lit::ByteStr(_)) => {
            Some("holds a `&'static str` literal")
        }
        Expr::Paren(p) => borrow_of(&p.expr),
        _ => None,
    }
}

/// The patterns of `let` conditions in an `if`/`while` condition (let chains included).
fn let_patterns(cond: &Expr) -> Vec<Pat> {
    match cond {
        Expr::Let(l) => vec![(*l.pat).clone()],
        Expr::Binary(b) if matches!(b.op, syn::BinOp::And(_)) => {
            let mut v = let_patterns(&b.left);
            v.extend(let_patterns(&b.right));
            v
        }
        Expr::Paren(p) => let_patterns(&p.expr),
        _ => Vec::new(),
    }
}

/// A short, stable description of an awaited operation: `call(issue_invoice)`, `sleep`, ….
fn describe_op(op: &Expr) -> String {
    match op {
        Expr::MethodCall(mc) => {
            let method = mc.method.to_string();
            match (method.as_str(), mc.args.first()) {
                ("call" | "child", Some(Expr::Path(p))) => {
                    let path = p
                        .path
                        .segments
                        .iter()
                        .map(|s| s.ident.to_string())
                        .collect::<Vec<_>>()
                        .join("::");
                    format!("{method}({path})")
                }
                _ => match &*mc.receiver {
                    Expr::MethodCall(inner) => {
                        format!("{}.{method}", describe_op(&Expr::MethodCall(inner.clone())))
                    }
                    _ => method,
                },
            }
        }
        Expr::Call(c) => c.func.to_token_stream().to_string().replace(' ', ""),
        Expr::Paren(p) => describe_op(&p.expr),
        _ => "await".into(),
    }
}

/// Items that can be declared again in each piece of their block without changing what they
/// mean (a type, `static` or `impl` declared twice would be two different things, and so would
/// a `fn` with a `static` of its own: each piece would count in its own).
fn redeclarable(item: &syn::Item) -> bool {
    match item {
        syn::Item::Fn(f) => !has_statics(f),
        syn::Item::Const(_) | syn::Item::Use(_) | syn::Item::Type(_) => true,
        syn::Item::Macro(m) => m.ident.is_some(),
        _ => false,
    }
}

/// The names of the `macro_rules!` in `body` whose rules contain a `break` or `continue`
/// outside a loop of their own (so one that leaves the loop the macro is used in).
fn loop_control_macros(body: &syn::Block) -> BTreeSet<String> {
    fn stray(tokens: TokenStream) -> bool {
        let mut in_loop_header = false;
        for tt in tokens {
            match tt {
                proc_macro2::TokenTree::Ident(i) if i == "continue" || i == "break" => return true,
                proc_macro2::TokenTree::Ident(i) if i == "loop" || i == "while" || i == "for" => {
                    in_loop_header = true;
                }
                proc_macro2::TokenTree::Group(g) => {
                    // A loop's own body may break and continue it.
                    let loop_body =
                        in_loop_header && g.delimiter() == proc_macro2::Delimiter::Brace;
                    in_loop_header &= !loop_body;
                    if !loop_body && stray(g.stream()) {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }
    struct Find(BTreeSet<String>);
    impl<'a> syn::visit::Visit<'a> for Find {
        fn visit_item_macro(&mut self, m: &'a syn::ItemMacro) {
            if let Some(ident) = &m.ident
                && m.mac.path.is_ident("macro_rules")
                && stray(m.mac.tokens.clone())
            {
                self.0.insert(ident.to_string());
            }
        }
    }
    let mut find = Find(BTreeSet::new());
    syn::visit::Visit::visit_block(&mut find, body);
    find.0
}

/// Whether a function declares a `static` (or a `thread_local!`) anywhere in its body.
fn has_statics(f: &syn::ItemFn) -> bool {
    struct Find(bool);
    impl<'a> syn::visit::Visit<'a> for Find {
        fn visit_item_static(&mut self, _: &'a syn::ItemStatic) {
            self.0 = true;
        }
        fn visit_macro(&mut self, m: &'a syn::Macro) {
            self.0 |= m.path.segments.last().is_some_and(|s| s.ident == "thread_local");
        }
    }
    let mut find = Find(false);
    syn::visit::Visit::visit_block(&mut find, &f.block);
    find.0
}

/// The redeclarable items of a block that are visible throughout it (not `macro_rules!`).
fn redeclarable_items(stmts: &[Stmt]) -> Vec<syn::Item> {
    stmts
        .iter()
        .filter_map(|s| match s {
            Stmt::Item(syn::Item::Macro(_)) => None,
            Stmt::Item(i) if redeclarable(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

/// The names an item declares (none for a glob import).
fn item_names(item: &syn::Item) -> Vec<String> {
    fn use_names(t: &syn::UseTree, out: &mut Vec<String>) {
        match t {
            syn::UseTree::Path(p) => use_names(&p.tree, out),
            syn::UseTree::Name(n) => out.push(n.ident.to_string()),
            syn::UseTree::Rename(r) => out.push(r.rename.to_string()),
            syn::UseTree::Glob(_) => {}
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_names(t, out)),
        }
    }
    let mut out = Vec::new();
    match item {
        syn::Item::Const(c) => out.push(c.ident.to_string()),
        syn::Item::Fn(f) => out.push(f.sig.ident.to_string()),
        syn::Item::Type(t) => out.push(t.ident.to_string()),
        syn::Item::Macro(m) => out.extend(m.ident.as_ref().map(|i| format!("{i}!"))),
        syn::Item::Use(u) => use_names(&u.tree, &mut out),
        _ => {}
    }
    out
}

/// The names an item declares, for any item (`item_names` covers the redeclarable ones).
fn declared_names(item: &syn::Item) -> Vec<String> {
    match item {
        syn::Item::Static(i) => vec![i.ident.to_string()],
        syn::Item::Struct(i) => vec![i.ident.to_string()],
        syn::Item::Enum(i) => vec![i.ident.to_string()],
        syn::Item::Union(i) => vec![i.ident.to_string()],
        syn::Item::Trait(i) => vec![i.ident.to_string()],
        syn::Item::Macro(_) => Vec::new(),
        other => item_names(other),
    }
}

/// How many times identifier `name` occurs in `tokens`, at any depth.
fn ident_count(tokens: &TokenStream, name: &str) -> usize {
    tokens
        .clone()
        .into_iter()
        .map(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) => usize::from(i == name),
            proc_macro2::TokenTree::Group(g) => ident_count(&g.stream(), name),
            _ => 0,
        })
        .sum()
}

/// Removes each `macro_rules!` declaration from the pieces of the machine that do not invoke
/// it: declaring it names the locals it uses, which would keep them alive for nothing.
fn drop_unused_macro_rules(m: &mut Machine) {
    use crate::analyze::macro_invocations as scan;
    fn invoked(m: &Machine, nodes: &[Node], out: &mut BTreeSet<String>) {
        for n in nodes {
            match n {
                Node::Code { stmt, .. } => scan(stmt, out),
                Node::If { cond, then, els, .. } => {
                    scan(cond, out);
                    invoked(m, then, out);
                    invoked(m, els, out);
                }
                Node::Match { scrutinee, arms, .. } => {
                    scan(scrutinee, out);
                    for a in arms {
                        scan(&a.pat, out);
                        invoked(m, &a.body, out);
                    }
                }
                Node::Scope(inner) => invoked(m, inner, out),
                Node::Return { expr, .. } => scan(expr, out),
                Node::Suspend(p) => scan(&m.points[*p].op, out),
                Node::Goto(_) => {}
            }
        }
    }
    fn retain(nodes: &mut Vec<Node>, used: &BTreeSet<String>) {
        nodes.retain(|n| match n {
            Node::Code { stmt: Stmt::Item(syn::Item::Macro(mac)), .. } => {
                mac.ident.as_ref().is_none_or(|i| used.contains(&i.to_string()))
            }
            _ => true,
        });
        for n in nodes {
            match n {
                Node::If { then, els, .. } => {
                    retain(then, used);
                    retain(els, used);
                }
                Node::Match { arms, .. } => arms.iter_mut().for_each(|a| retain(&mut a.body, used)),
                Node::Scope(inner) => retain(inner, used),
                _ => {}
            }
        }
    }
    for b in 0..m.blocks.len() {
        let mut used = BTreeSet::new();
        invoked(m, &m.blocks[b].body, &mut used);
        retain(&mut m.blocks[b].body, &used);
    }
}

/// Replaces each `if`/`match` branch that jumps to a branch block with that block's code.
fn inline_branches(m: &mut Machine) {
    fn inline(m: &mut Machine, nodes: &mut [Node]) {
        for node in nodes.iter_mut() {
            let lists: Vec<&mut Vec<Node>> = match node {
                Node::If { then, els, .. } => vec![then, els],
                Node::Match { arms, .. } => arms.iter_mut().map(|a| &mut a.body).collect(),
                Node::Scope(inner) => vec![inner],
                _ => continue,
            };
            for list in lists {
                if let [Node::Goto(g)] = list.as_slice() {
                    let target = m.gotos[*g].target;
                    if m.blocks[target].kind == BlockKind::Branch {
                        let mut body = std::mem::take(&mut m.blocks[target].body);
                        inline(m, &mut body);
                        *list = body;
                        continue;
                    }
                }
                inline(m, list);
            }
        }
    }
    for b in 0..m.blocks.len() {
        if m.blocks[b].kind == BlockKind::Branch {
            continue;
        }
        let mut body = std::mem::take(&mut m.blocks[b].body);
        inline(m, &mut body);
        m.blocks[b].body = body;
    }
}

/// Blocks reachable from the entry through gotos and suspensions.
fn reachable(m: &Machine) -> Vec<bool> {
    let mut seen = vec![false; m.blocks.len()];
    for b in m.depth_first() {
        seen[b] = true;
    }
    seen
}

#[cfg(test)]
pub(crate) fn lower_for_test(body: syn::Block, inputs: &[Pat]) -> (Machine, Errors) {
    let errors = Errors::default();
    let mut m = lower(&body, inputs, &quote::quote!(::durable), &errors);
    crate::analyze::liveness(&mut m, &errors);
    (m, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: syn::Block, inputs: &[Pat]) -> Vec<(String, Vec<String>)> {
        let (m, errors) = lower_for_test(body, inputs);
        assert!(errors.is_empty(), "{:?}", errors.messages());
        m.stored_locals()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn straight_line_stores_only_what_is_used_later() {
        let s = stored(
            parse_quote!({
                let big = vec![0u8; 1 << 20];
                let id = ctx.call(issue, data).await?;
                let n = big.len();
                ctx.call(notify, id.clone()).await?;
                Ok((id, n))
            }),
            &[parse_quote!(data)],
        );
        assert_eq!(s[0], ("call(issue)#0".to_owned(), names(&["big"])));
        assert_eq!(s[1], ("call(notify)#0".to_owned(), names(&["id", "n"])));
    }

    /// The statements of the lowered code, as text.
    fn statements(m: &Machine) -> Vec<String> {
        fn walk(nodes: &[Node], out: &mut Vec<String>) {
            for n in nodes {
                match n {
                    Node::Code { stmt, .. } => out.push(stmt.to_token_stream().to_string()),
                    Node::If { then, els, .. } => {
                        walk(then, out);
                        walk(els, out);
                    }
                    Node::Match { arms, .. } => arms.iter().for_each(|a| walk(&a.body, out)),
                    Node::Scope(inner) => walk(inner, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        m.blocks.iter().for_each(|b| walk(&b.body, &mut out));
        out
    }

    #[test]
    fn macros_keep_the_text_the_user_wrote() {
        let (m, errors) = lower_for_test(
            parse_quote!({
                let a = ctx.call(f, 1).await?;
                let text = stringify!(half(a)?);
                assert!(half(a)? > 100);
                assert!(half(a)? > 1, "custom {}", a);
                Ok(text)
            }),
            &[],
        );
        assert!(errors.is_empty(), "{:?}", errors.messages());
        let code = statements(&m).join("\n");
        assert!(code.contains("stringify ! (half (a) ?)"), "{code}");
        assert!(
            code.contains(r#""assertion failed: {}" , :: core :: stringify ! (half (a) ? > 100)"#),
            "{code}"
        );
        assert!(!code.contains(r#"1 , "custom {}" , a , "assertion"#), "{code}");
    }

    #[test]
    fn an_inner_item_that_would_shadow_a_name_used_outside_its_block_is_refused() {
        let messages = |body: syn::Block| lower_for_test(body, &[parse_quote!(n)]).1.messages();
        let m = messages(parse_quote!({
            let outer = LEVEL.load(SeqCst);
            let inner = if n > 0 {
                static LEVEL: AtomicI64 = AtomicI64::new(7);
                ctx.call(f, LEVEL.load(SeqCst)).await?
            } else {
                0
            };
            Ok((outer, inner))
        }));
        assert!(m.iter().any(|m| m.contains("`LEVEL` is declared in this block")), "{m:?}");
        let m = messages(parse_quote!({
            let base = RATE;
            let inner = {
                const RATE: i64 = 20;
                struct Tag;
                let a = ctx.call(f, RATE).await?;
                a
            };
            Ok((base, inner))
        }));
        assert!(m.iter().any(|m| m.contains("`RATE` is declared in this block")), "{m:?}");
        // Used inside its block only: hoisted as before.
        let m = messages(parse_quote!({
            let inner = {
                static SEEN: AtomicI64 = AtomicI64::new(0);
                ctx.call(f, SEEN.load(SeqCst)).await?
            };
            Ok(inner)
        }));
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn a_macro_that_leaves_a_loop_whose_body_awaits_is_refused() {
        let messages = |body: syn::Block| lower_for_test(body, &[parse_quote!(n)]).1.messages();
        let m = messages(parse_quote!({
            macro_rules! skip {
                () => {
                    continue
                };
            }
            for i in 0..n {
                ctx.call(f, i).await?;
                if i % 3 == 0 {
                    skip!();
                }
            }
            Ok(())
        }));
        assert!(m.iter().any(|m| m.contains("`skip!` expands to `break` or `continue`")), "{m:?}");
        // Its own loop, or a loop that does not await, may be left.
        let m = messages(parse_quote!({
            macro_rules! first_even {
                ($v:expr) => {{
                    let mut f = 0;
                    for x in $v {
                        if x % 2 == 0 {
                            f = x;
                            break;
                        }
                    }
                    f
                }};
            }
            macro_rules! skip {
                () => {
                    continue
                };
            }
            for i in 0..n {
                ctx.call(f, first_even!(vec![1, 2])).await?;
                for j in 0..i {
                    if j == 1 {
                        skip!();
                    }
                }
            }
            Ok(())
        }));
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn places_whose_order_around_an_await_cannot_be_kept_are_refused() {
        let refused = |body: syn::Block| {
            let (_, errors) = lower_for_test(body, &[parse_quote!(x), parse_quote!(v)]);
            errors.messages()
        };
        let m = refused(parse_quote!({
            let eq = x == ctx.call(f, bump(&mut x)).await?;
            Ok(eq)
        }));
        assert!(m.iter().any(|m| m.contains("`x` is read here")), "{m:?}");
        let m = refused(parse_quote!({
            let big = x.max(
                ctx.call(f, {
                    x += 1;
                    x
                })
                .await?,
            );
            Ok(big)
        }));
        assert!(m.iter().any(|m| m.contains("`x` is read here")), "{m:?}");
        let m = refused(parse_quote!({
            v[{
                x += 1;
                x
            }] += &ctx.call(f, 1).await?;
            Ok(v)
        }));
        assert!(m.iter().any(|m| m.contains("compute the index into a local")), "{m:?}");
        // Read but not changed on the right, or a plain index: nothing to refuse.
        for body in [
            parse_quote!({
                let same = x == ctx.call(f, x).await?;
                Ok(same)
            }),
            parse_quote!({
                v[x] += &ctx.call(f, x).await?;
                Ok(v)
            }),
            parse_quote!({
                let n = v.len()
                    + ctx
                        .call(f, {
                            x += 1;
                            x
                        })
                        .await?;
                Ok(n)
            }),
        ] {
            assert!(refused(body).is_empty());
        }
    }

    #[test]
    fn iterables_whose_items_would_be_produced_early_are_refused() {
        let hazard = |e: Expr| eager_hazard(&e);
        assert!(hazard(parse_quote!((0..n).map(|x| f(x)).enumerate())).is_some());
        assert!(hazard(parse_quote!((0..n).map(|x| f(x)).take(2))).is_some());
        assert!(hazard(parse_quote!(std::iter::successors(Some(1), |x| Some(x * 2)))).is_some());
        assert!(hazard(parse_quote!((0..).step_by(2))).is_some());
        assert!(hazard(parse_quote!(v.iter().take(3).cycle())).is_some());
        assert!(hazard(parse_quote!(std::iter::repeat(1))).is_some());
        assert_eq!(hazard(parse_quote!((0..).step_by(2).take(3))), None);
        assert_eq!(hazard(parse_quote!(v.into_iter().enumerate())), None);
        assert_eq!(hazard(parse_quote!(names.drain(..).rev())), None);
        assert_eq!(hazard(parse_quote!(a.into_iter().zip(1..))), None);

        let (_, errors) = lower_for_test(
            parse_quote!({
                for (i, x) in (0..n).map(|x| x * 2).enumerate() {
                    ctx.call(a, (i, x)).await?;
                }
                Ok(())
            }),
            &[parse_quote!(n)],
        );
        let messages = errors.messages();
        assert!(messages.iter().any(|m| m.contains("collect them first")), "{messages:?}");
    }

    #[test]
    fn awaits_in_one_expression_are_lifted_in_order() {
        let (m, errors) = lower_for_test(
            parse_quote!({
                let total = ctx.call(a, 1).await? + ctx.call(b, 2).await?;
                Ok(total)
            }),
            &[],
        );
        assert!(errors.is_empty());
        assert_eq!(m.points.len(), 2);
        assert!(m.points.iter().all(|p| p.try_op));
        let s = m.stored_locals();
        assert_eq!(s[1].1, names(&["awaited@#0"]));
    }

    #[test]
    fn operands_before_an_await_are_evaluated_first() {
        let (m, errors) = lower_for_test(
            parse_quote!({
                let t = total / count + ctx.call(a, 1).await?;
                let u = v.len() + f(x, ctx.call(b, 2).await?);
                Ok((t, u))
            }),
            &[parse_quote!(total), parse_quote!(count), parse_quote!(v), parse_quote!(x)],
        );
        assert!(errors.is_empty(), "{:?}", errors.messages());
        let s = m.stored_locals();
        assert_eq!(s[0].1, names(&["v", "x", "operand@#0"]), "`total / count` before the call");
        assert_eq!(
            s[1].1,
            names(&["t", "operand@#1", "operand@#2"]),
            "`v.len()` and `x` before it"
        );
    }

    #[test]
    fn loop_locals_live_around_the_back_edge() {
        let s = stored(
            parse_quote!({
                let mut sum = 0;
                let unused = String::new();
                for i in 0..n {
                    let r = ctx.call(step, i).await?;
                    sum += r;
                }
                Ok(sum)
            }),
            &[parse_quote!(n)],
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "for0/call(step)#0");
        assert_eq!(s[0].1, names(&["sum", "iter@for0#0"]));
    }

    #[test]
    fn branches_join_and_only_the_taken_side_matters() {
        let (m, errors) = lower_for_test(
            parse_quote!({
                let a = 1;
                let b = 2;
                let x = if c { ctx.call(f, a).await? } else { b };
                Ok(x)
            }),
            &[parse_quote!(c)],
        );
        assert!(errors.is_empty(), "{:?}", errors.messages());
        assert_eq!(m.points.len(), 1);
        assert_eq!(m.points[0].identity, "if0/then/call(f)#0");
        assert!(m.stored_locals()[0].1.is_empty());
    }

    #[test]
    fn references_and_literals_kept_across_an_await_are_rejected() {
        let (_, errors) = lower_for_test(
            parse_quote!({
                let s = "x";
                let r = &v;
                ctx.call(f, 1).await?;
                Ok(format!("{s}{r}"))
            }),
            &[parse_quote!(v)],
        );
        let m = errors.messages();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("`s` holds a `&'static str` literal"));
        assert!(m[1].contains("`r` is a reference"));
    }

    #[test]
    fn shadowed_local_needed_later_is_reported() {
        let (_, errors) = lower_for_test(
            parse_quote!({
                let x = 1;
                {
                    let x = 2;
                    ctx.call(f, x).await?;
                }
                Ok(x)
            }),
            &[],
        );
        assert!(
            errors.messages().iter().any(|m| m.contains("shadows it")),
            "{:?}",
            errors.messages()
        );
    }

    #[test]
    fn identities_do_not_depend_on_lines_or_unrelated_code() {
        let a = stored(
            parse_quote!({
                let x = ctx.call(f, 1).await?;
                Ok(x)
            }),
            &[],
        );
        let b = stored(
            parse_quote!({
                log();
                if y {
                    z();
                }
                let x = ctx.call(f, 1).await?;
                ctx.call(g, 2).await?;
                Ok(x)
            }),
            &[parse_quote!(y)],
        );
        assert_eq!(a[0].0, b[0].0);
    }

    #[test]
    fn break_with_value_and_labels() {
        let (m, errors) = lower_for_test(
            parse_quote!({
                let mut n = 0;
                let found = 'outer: loop {
                    while n < 10 {
                        let v = ctx.call(f, n).await?;
                        if v > 3 {
                            break 'outer v;
                        }
                        if v == 0 {
                            continue 'outer;
                        }
                        n += 1;
                    }
                    break 0;
                };
                Ok(found)
            }),
            &[],
        );
        assert!(errors.is_empty(), "{:?}", errors.messages());
        assert_eq!(m.points[0].identity, "loop0/while0/call(f)#0");
        assert_eq!(m.stored_locals()[0].1, names(&["n"]));
    }

    #[test]
    fn items_stay_in_their_block_and_are_declared_again_after_an_await() {
        let (m, errors) = lower_for_test(
            parse_quote!({
                let base = RATE;
                {
                    const RATE: i64 = 20;
                    let a = ctx.call(f, RATE).await?;
                    g(a, RATE);
                }
                struct Hoisted;
                Ok(base)
            }),
            &[],
        );
        assert!(errors.is_empty(), "{:?}", errors.messages());
        assert_eq!(m.items.len(), 1, "only the struct is hoisted");
        let entry = &m.blocks[0].body;
        assert!(matches!(entry[0], Node::Code { .. }), "`let base` outside the scope");
        let Some(Node::Scope(inner)) = entry.last() else { panic!("no scope for the block") };
        let declared_first =
            matches!(&inner[0], Node::Code { stmt: Stmt::Item(syn::Item::Const(_)), .. });
        assert!(declared_first, "the const is declared inside the block");
        let resume = &m.blocks[m.points[0].resume].body;
        let declared_again =
            matches!(&resume[0], Node::Code { stmt: Stmt::Item(syn::Item::Const(_)), .. });
        assert!(declared_again, "and again after the await");
    }

    #[test]
    fn assignment_kills_rather_than_uses() {
        let s = stored(
            parse_quote!({
                let mut buf = s;
                buf = ctx.call(up, buf).await?;
                let x;
                x = ctx.call(f, 1).await?;
                Ok((buf, x))
            }),
            &[parse_quote!(s)],
        );
        assert_eq!(s[0].1, Vec::<String>::new(), "`buf` is moved into the call, then set");
        assert_eq!(s[1].1, names(&["buf"]), "`x` is set after the await, not stored");
    }

    #[test]
    fn for_keeps_ranges_and_borrowed_collections_instead_of_collecting() {
        let (m, errors) = lower_for_test(
            parse_quote!({
                for attempt in 1.. {
                    ctx.call(f, attempt).await?;
                }
                for n in names.iter() {
                    ctx.call(g, n.len()).await?;
                }
                Ok(names)
            }),
            &[parse_quote!(names)],
        );
        assert!(errors.is_empty(), "{:?}", errors.messages());
        let made = |b: usize| match &m.blocks[b].body[..] {
            [Node::Code { stmt, .. }, ..] => stmt.to_token_stream().to_string(),
            _ => String::new(),
        };
        assert!(made(0).contains("ForRangeFrom :: new"), "{}", made(0));
        let s = m.stored_locals();
        assert_eq!(s[1].1, names(&["names", "iter@for1#0"]), "the collection and a cursor");
    }

    #[test]
    fn arms_follow_the_source_not_the_first_jump() {
        let (m, errors) = lower_for_test(
            parse_quote!({
                let mut acc = Vec::new();
                loop {
                    if done() {
                        break;
                    }
                    acc.push(ctx.call(f, 1).await?);
                }
                Ok(acc.iter().map(|x| x.abs()).count())
            }),
            &[],
        );
        assert!(errors.is_empty(), "{:?}", errors.messages());
        let order = m.arm_order();
        let resume = m.points[0].resume;
        let at = |b: usize| order.iter().position(|x| *x == b);
        let exit = order
            .iter()
            .copied()
            .find(|b| m.blocks[*b].body.iter().any(|n| matches!(n, Node::Return { .. })));
        assert!(exit.is_some(), "the exit returns");
        assert!(at(resume) < exit.and_then(at), "the push (after the await) is checked first");
        assert!(
            m.depth_first().iter().position(|b| Some(*b) == exit)
                < m.depth_first().iter().position(|b| *b == resume),
            "depth first would check the exit first"
        );
    }

    #[test]
    fn places_that_are_borrowed_are_not_copied_before_an_await() {
        let s = stored(
            parse_quote!({
                let mut v = Vec::new();
                v.push(ctx.call(f, 1).await?);
                let same = v == ctx.call(g, 2).await?;
                helper(&mut v, ctx.call(h, 3).await?);
                Ok((v, same))
            }),
            &[],
        );
        assert_eq!(s[0].1, names(&["v"]), "the receiver stays `v`");
        assert_eq!(s[1].1, names(&["v"]), "a comparison borrows `v`");
        assert_eq!(s[2].1, names(&["v", "same"]), "`&mut v` stays a borrow of `v`");
    }
}
