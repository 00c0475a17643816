//! Tokens: the unit struct users name, its trait impl, and the step machine.
//!
//! The machine, for an orchestration with blocks `B0…Bn`:
//!
//! ```text
//! fn machine(ctx, resume) -> Step<R> {
//!     enum State<T…> { B0 { input… }, B3 { live locals…, op: Marker<O> }, … }
//!     let mut state = match resume {
//!         Start(input)        => State::B0 { decoded input },
//!         At { frame, .. }    => match frame.point { "id" => State::B3 { checked, decoded locals } },
//!     };
//!     'machine: loop { match state { State::B0 {..} => { code; goto/suspend/return } … } }
//! }
//! ```
//! A goto is `{ state = State::Bk { live locals }; continue 'machine }`; a suspension writes the
//! live locals into a frame, builds the resume variant (so the compiler infers its types) and
//! returns the frame with the operation's command. Arms are emitted in source order (the order
//! the lowering entered their blocks), so each variant is built before an arm reads it, and
//! code that fixes a local's type is checked before code after it that needs it. A
//! local set by plain assignment (`x = e;` becomes `let x = e;` in a piece where `x` is not
//! bound) has a `PhantomData` type witness that each of its `let`s is tied to, so the pieces
//! agree on its type as one function would.

use std::collections::BTreeSet;

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote_spanned};
use syn::visit_mut::VisitMut;

use crate::args::Args;
use crate::ast::{ActivityFn, OrchestrationFn};
use crate::ir::{BindingId, BlockKind, Machine, Node};

/// `quote!` with the macro's own hygiene: every identifier the template writes (`registry`,
/// `ctx`, `v`, `__durable_frame`…) resolves at the mixed site, so no user item or local of the
/// same name can capture it; interpolated user tokens keep their spans.
macro_rules! hygienic {
    ($($t:tt)*) => { quote::quote_spanned!(proc_macro2::Span::mixed_site()=> $($t)*) };
}

fn state_ident() -> syn::Ident {
    format_ident!("__DurableState", span = Span::mixed_site())
}
fn var_ident() -> syn::Ident {
    format_ident!("__durable_state", span = Span::mixed_site())
}
fn label() -> syn::Lifetime {
    syn::Lifetime::new("'__durable_machine", Span::mixed_site())
}
fn variant(b: usize) -> syn::Ident {
    format_ident!("B{}", b)
}
/// The state variants' field for the awaited operation. Field names are not hygienic and the
/// other fields are named after the user's locals: pick a name none of them has.
fn op_field(m: &Machine) -> syn::Ident {
    let mut name = String::from("__durable_op");
    while m.bindings.iter().any(|b| b.ident == name) {
        name.push('_');
    }
    syn::Ident::new(&name, Span::mixed_site())
}
fn completion_ident() -> syn::Ident {
    format_ident!("__durable_completion", span = Span::mixed_site())
}

struct Ctx<'a> {
    m: &'a Machine,
    krate: &'a TokenStream,
    /// Locals set by a plain assignment somewhere: each `let` of one, and each assignment that
    /// becomes a `let`, is tied to one type witness, so that a type fixed only by a later piece
    /// of the machine (`let mut best = None; … best = Some(v)`) is inferred as in one function.
    tied: BTreeSet<BindingId>,
}

/// The bindings a plain assignment sets, anywhere in the machine.
fn assigned_bindings(m: &Machine) -> BTreeSet<BindingId> {
    fn scan(nodes: &[Node], out: &mut BTreeSet<BindingId>) {
        for n in nodes {
            match n {
                Node::Code { stmt: syn::Stmt::Expr(syn::Expr::Assign(_), _), defs, .. } => {
                    out.extend(defs.iter().copied());
                }
                Node::If { then, els, .. } => {
                    scan(then, out);
                    scan(els, out);
                }
                Node::Match { arms, .. } => arms.iter().for_each(|a| scan(&a.body, out)),
                Node::Scope(inner) => scan(inner, out),
                _ => {}
            }
        }
    }
    let mut out = BTreeSet::new();
    m.blocks.iter().for_each(|b| scan(&b.body, &mut out));
    out
}

fn witness(b: BindingId) -> syn::Ident {
    format_ident!("__durable_type_of{}", b, span = Span::mixed_site())
}
/// Whether `b` holds the state of a `for` loop (its remaining items, range or cursor).
fn is_for_state(b: &crate::ir::Binding) -> bool {
    b.synthetic && b.name.starts_with("iter@")
}

/// The type witness of point `p`'s slot (for register mode, which has no values).
fn slot_witness(p: usize) -> syn::Ident {
    format_ident!("__durable_slot_type{}", p, span = Span::mixed_site())
}
fn tie_fn() -> syn::Ident {
    format_ident!("__durable_same_type", span = Span::mixed_site())
}

impl Ctx<'_> {
    fn goto(&self, g: usize) -> TokenStream {
        let goto = &self.m.gotos[g];
        let (st, var, l) = (state_ident(), var_ident(), label());
        let v = variant(goto.target);
        let fields = self.m.blocks[goto.target].live_in.iter().map(|b| &self.m.bindings[*b].ident);
        hygienic!({ #var = #st::#v { #(#fields),* }; continue #l; })
    }

    /// `bound`: the bindings declared in the Rust scope being written (the arm's fields, then
    /// each `let`), so that `x = e;` where `x` is not becomes `let x = e;`.
    fn nodes(&self, nodes: &[Node], bound: &BTreeSet<BindingId>) -> TokenStream {
        let mut bound = bound.clone();
        let mut out = TokenStream::new();
        for (i, n) in nodes.iter().enumerate() {
            out.extend(self.node(n, &nodes[i + 1..], &mut bound));
        }
        out
    }

    fn node(&self, node: &Node, rest: &[Node], bound: &mut BTreeSet<BindingId>) -> TokenStream {
        let krate = self.krate;
        match node {
            Node::Code { stmt, defs, .. } => {
                let mut stmt = stmt.clone();
                if let syn::Stmt::Local(l) = &stmt
                    && l.init.is_none()
                    && !defs.iter().any(|b| self.mentioned(*b, rest))
                {
                    // `let x;` assigned only in other pieces of the machine: there, the
                    // assignment declares it; here, it would be a local of unknown type.
                    return TokenStream::new();
                }
                let mut declares = match &stmt {
                    syn::Stmt::Local(l) if l.init.is_some() => defs.clone(),
                    _ => Vec::new(),
                };
                if let syn::Stmt::Expr(syn::Expr::Assign(a), _) = &stmt
                    && let [b] = defs.as_slice()
                    && !bound.contains(b)
                {
                    let binding = &self.m.bindings[*b];
                    let ident = &binding.ident;
                    let mutability = binding.mutable.then(|| hygienic!(mut));
                    let right = &a.right;
                    let ty = binding.ty.as_ref().map(|t| hygienic!(: #t));
                    stmt = syn::parse_quote!(let #mutability #ident #ty = #right;);
                    declares.push(*b);
                }
                bound.extend(defs.iter().copied());
                ReplaceGotos(self).visit_stmt_mut(&mut stmt);
                let tie = tie_fn();
                let ties = declares.iter().filter(|b| self.tied.contains(b)).map(|b| {
                    let (w, ident) = (witness(*b), &self.m.bindings[*b].ident);
                    hygienic!(#tie(&#w, &#ident);)
                });
                hygienic!(#stmt #(#ties)*)
            }
            Node::If { cond, then, els, defs, .. } => {
                let mut cond = cond.clone();
                ReplaceGotos(self).visit_expr_mut(&mut cond);
                let mut in_then = bound.clone();
                in_then.extend(defs.iter().copied());
                let (t, e) = (self.nodes(then, &in_then), self.nodes(els, bound));
                hygienic!(if #cond { #t } else { #e })
            }
            Node::Match { scrutinee, arms, .. } => {
                let arms = arms.iter().map(|a| {
                    let pat = &a.pat;
                    let mut in_arm = bound.clone();
                    in_arm.extend(a.defs.iter().copied());
                    let body = self.nodes(&a.body, &in_arm);
                    hygienic!(#pat => { #body })
                });
                hygienic!(match #scrutinee { #(#arms)* })
            }
            Node::Scope(inner) => {
                let inner = self.nodes(inner, bound);
                hygienic!({ #inner })
            }
            Node::Goto(g) => self.goto(*g),
            Node::Return { expr, .. } => hygienic!(return #krate::__support_v1::Step::Done(#expr);),
            Node::Suspend(p) => self.suspend(*p),
        }
    }

    /// Whether binding `b` is named by `nodes` or carried by one of their transfers.
    fn mentioned(&self, b: BindingId, nodes: &[Node]) -> bool {
        let name = self.m.bindings[b].ident.to_string();
        let named = |t: TokenStream| names_ident(t, &name);
        let carried = |g: &usize| self.m.blocks[self.m.gotos[*g].target].live_in.contains(&b);
        nodes.iter().any(|n| match n {
            Node::Code { stmt, gotos, .. } => named(hygienic!(#stmt)) || gotos.iter().any(carried),
            Node::If { cond, then, els, .. } => {
                named(hygienic!(#cond)) || self.mentioned(b, then) || self.mentioned(b, els)
            }
            Node::Match { scrutinee, arms, .. } => {
                named(hygienic!(#scrutinee))
                    || arms.iter().any(|a| {
                        let pat = &a.pat;
                        named(hygienic!(#pat)) || self.mentioned(b, &a.body)
                    })
            }
            Node::Scope(inner) => self.mentioned(b, inner),
            Node::Goto(g) => carried(g),
            Node::Return { expr, .. } => named(hygienic!(#expr)),
            Node::Suspend(p) => {
                let point = &self.m.points[*p];
                let op = &point.op;
                named(hygienic!(#op)) || self.m.blocks[point.resume].live_in.contains(&b)
            }
        })
    }

    /// The `.await` of point `p`: the operand goes into the resume block's slot, and that block
    /// polls it (parking there when it is not ready).
    fn suspend(&self, p: usize) -> TokenStream {
        let krate = self.krate;
        let point = &self.m.points[p];
        let mut op = point.op.clone();
        ReplaceGotos(self).visit_expr_mut(&mut op);
        let live = &self.m.blocks[point.resume].live_in;
        let fields = live.iter().map(|b| &self.m.bindings[*b].ident);
        let (st, var, v, opf, l) =
            (state_ident(), var_ident(), variant(point.resume), op_field(self.m), label());
        let opv = format_ident!("__durable_opv", span = Span::mixed_site());
        let fresh = located_at(hygienic!(#krate::__support_v1::Slot::fresh(#opv)), point.span);
        let (tie, slot_type) = (tie_fn(), slot_witness(p));
        hygienic!({
            let #opv = #op;
            let #opv = #fresh;
            #tie(&#slot_type, &#opv);
            #var = #st::#v { #(#fields,)* #opf: #opv };
            continue #l;
        })
    }

    /// Parks at point `p` from its resume block, whose fields are bound: writes the live locals
    /// and the slot's part into a frame, puts the state back and returns the command.
    fn park(&self, p: usize, slot: &syn::Ident, command: &syn::Ident) -> TokenStream {
        let krate = self.krate;
        let point = &self.m.points[p];
        let live = &self.m.blocks[point.resume].live_in;
        let w = format_ident!("__durable_w", span = Span::mixed_site());
        let writes = live.iter().map(|b| {
            let binding = &self.m.bindings[*b];
            let (ident, name) = (&binding.ident, &binding.name);
            let value = format_ident!("__durable_value", span = Span::mixed_site());
            let write = if is_for_state(binding) {
                hygienic!(#krate::__support_v1::FrameWriter::write_for_state(&mut #w, #name, #value))
            } else {
                hygienic!(#krate::__support_v1::FrameWriter::write(&mut #w, #name, #value))
            };
            let write = located_at(write, ident.span());
            hygienic!({ let #value = &#ident; #write; })
        });
        let fields = live.iter().map(|b| &self.m.bindings[*b].ident);
        let (st, var, v, opf) =
            (state_ident(), var_ident(), variant(point.resume), op_field(self.m));
        let identity = &point.identity;
        let line = quote_spanned!(point.span=> ::core::line!());
        let frame = format_ident!("__durable_frame", span = Span::mixed_site());
        let park =
            located_at(hygienic!(#krate::__support_v1::park(#frame, #command, #var)), point.span);
        let store =
            located_at(hygienic!(#krate::__support_v1::Slot::store(&#slot, &mut #w)), point.span);
        hygienic!({
            static __DURABLE_CHECKED: ::core::sync::atomic::AtomicBool = ::core::sync::atomic::AtomicBool::new(false);
            let mut #w = #krate::__support_v1::FrameWriter::new(&__DURABLE_CHECKED);
            #(#writes)*
            #store;
            let #frame = #w.finish_at(#identity, ::core::file!(), #line);
            #var = #st::#v { #(#fields,)* #opf: #slot };
            return #park;
        })
    }

    /// The arm that runs block `b`.
    fn arm(&self, b: usize) -> TokenStream {
        let krate = self.krate;
        let block = &self.m.blocks[b];
        let st = state_ident();
        let v = variant(b);
        let fields = block.live_in.iter().map(|id| {
            let binding = &self.m.bindings[*id];
            let ident = &binding.ident;
            if binding.mutable { hygienic!(mut #ident) } else { hygienic!(#ident) }
        });
        let mut bound: BTreeSet<BindingId> = block.live_in.iter().copied().collect();
        if let BlockKind::Resume(p) = block.kind {
            bound.insert(self.m.points[p].value);
        }
        let body = self.nodes(&block.body, &bound);
        match block.kind {
            BlockKind::Resume(p) => {
                let point = &self.m.points[p];
                let value = &self.m.bindings[point.value].ident;
                let opf = op_field(self.m);
                let unwrap = point.try_op.then(|| {
                    quote_spanned!(Span::mixed_site().located_at(point.span)=> let #value = match #value {
                        ::core::result::Result::Ok(__durable_v) => __durable_v,
                        ::core::result::Result::Err(__durable_e) => return #krate::__support_v1::Step::Done(
                            ::core::result::Result::Err(::core::convert::From::from(__durable_e))),
                    };)
                });
                let completion = completion_ident();
                let identity = &point.identity;
                let poll = located_at(
                    hygienic!(#krate::__support_v1::Slot::poll(#opf, __durable_ctx, &mut #completion, #identity)),
                    point.span,
                );
                let slot = format_ident!("__durable_slot", span = Span::mixed_site());
                let command = format_ident!("__durable_command", span = Span::mixed_site());
                let park = self.park(p, &slot, &command);
                hygienic!(#st::#v { #(#fields,)* #opf } => {
                    let #value = match #poll {
                        #krate::__support_v1::Polled::Ready(__durable_v) => __durable_v,
                        #krate::__support_v1::Polled::Park(#slot, #command) => #park,
                        #krate::__support_v1::Polled::Fault(__durable_f) => return #krate::__support_v1::fault(__durable_f),
                    };
                    #unwrap
                    #body
                })
            }
            _ => hygienic!(#st::#v { #(#fields),* } => { #body }),
        }
    }

    /// The prologue arm that rebuilds the state of point `p` from a frame.
    fn decode_point(&self, p: usize) -> TokenStream {
        let krate = self.krate;
        let point = &self.m.points[p];
        let live = &self.m.blocks[point.resume].live_in;
        let markers: Vec<_> = live
            .iter()
            .map(|b| format_ident!("__durable_ty{}", b, span = Span::mixed_site()))
            .collect();
        let names = live.iter().map(|b| &self.m.bindings[*b].name);
        let r = format_ident!("__durable_r", span = Span::mixed_site());
        let reads = live.iter().zip(&markers).map(|(b, marker)| {
            let binding = &self.m.bindings[*b];
            let ident = &binding.ident;
            let read = if is_for_state(binding) {
                hygienic!(#krate::__support_v1::read_for_state(&mut #r, #marker))
            } else {
                hygienic!(#krate::__support_v1::read(&mut #r, #marker))
            };
            let read = located_at(read, ident.span());
            hygienic!(let #ident = match #read {
                ::core::result::Result::Ok(__durable_v) => __durable_v,
                ::core::result::Result::Err(__durable_f) => return #krate::__support_v1::fault(__durable_f),
            };)
        });
        let fields = live.iter().map(|b| &self.m.bindings[*b].ident);
        let (st, v, opf) = (state_ident(), variant(point.resume), op_field(self.m));
        let identity = &point.identity;
        let line = quote_spanned!(point.span=> ::core::line!());
        let restore =
            located_at(hygienic!(#krate::__support_v1::Slot::restore(&mut #r)), point.span);
        hygienic!(#identity => {
            let mut #r = match #krate::__support_v1::FrameReader::open(
                __durable_frame, #line, &[#((#names, #krate::__support_v1::type_name_of(&#markers))),*]
            ) {
                ::core::result::Result::Ok(__durable_r) => __durable_r,
                ::core::result::Result::Err(__durable_f) => return #krate::__support_v1::fault(__durable_f),
            };
            #(#reads)*
            let __durable_slot = match #restore {
                ::core::result::Result::Ok(__durable_s) => __durable_s,
                ::core::result::Result::Err(__durable_f) => return #krate::__support_v1::fault(__durable_f),
            };
            #st::#v { #(#fields,)* #opf: __durable_slot }
        })
    }
}

impl Ctx<'_> {
    /// The register-mode entry that lists point `p`'s stored locals with their types.
    fn describe_point(&self, p: usize) -> TokenStream {
        let krate = self.krate;
        let point = &self.m.points[p];
        let live = &self.m.blocks[point.resume].live_in;
        let names = live.iter().map(|b| &self.m.bindings[*b].name);
        let markers = live.iter().map(|b| type_marker(*b));
        let identity = &point.identity;
        hygienic!(__durable_layouts.push((
            #identity,
            ::std::vec![#((#names, #krate::__support_v1::type_name_of(&#markers))),*],
        ));)
    }

    /// The render-mode arm that decodes point `p`'s locals with their types, as JSON.
    fn render_point(&self, p: usize) -> TokenStream {
        let krate = self.krate;
        let point = &self.m.points[p];
        let live = &self.m.blocks[point.resume].live_in;
        let names: Vec<&String> = live.iter().map(|b| &self.m.bindings[*b].name).collect();
        let markers: Vec<syn::Ident> = live.iter().map(|b| type_marker(*b)).collect();
        let r = format_ident!("__durable_r", span = Span::mixed_site());
        let reads = live.iter().zip(&markers).zip(&names).map(|((b, marker), name)| {
            let binding = &self.m.bindings[*b];
            let read = if is_for_state(binding) {
                hygienic!(#krate::__support_v1::read_for_state(&mut #r, #marker))
            } else {
                hygienic!(#krate::__support_v1::read(&mut #r, #marker))
            };
            // At the local, like the frame's reads and writes: one error for a local that
            // cannot be stored.
            let read = located_at(read, binding.ident.span());
            let json = located_at(
                hygienic!(#krate::__support_v1::to_json(&__durable_v)),
                binding.ident.span(),
            );
            hygienic!(match #read {
                ::core::result::Result::Ok(__durable_v) => __durable_locals.push((
                    ::std::string::String::from(#name),
                    #json,
                )),
                ::core::result::Result::Err(__durable_f) => return #krate::__support_v1::fault(__durable_f),
            })
        });
        let identity = &point.identity;
        let line = quote_spanned!(point.span=> ::core::line!());
        let slot_type = slot_witness(p);
        let render = located_at(
            hygienic!(#krate::__support_v1::Slot::render(&#slot_type, &mut #r)),
            point.span,
        );
        hygienic!(#identity => {
            let mut #r = match #krate::__support_v1::FrameReader::open(
                __durable_frame, #line, &[#((#names, #krate::__support_v1::type_name_of(&#markers))),*]
            ) {
                ::core::result::Result::Ok(__durable_r) => __durable_r,
                ::core::result::Result::Err(__durable_f) => return #krate::__support_v1::fault(__durable_f),
            };
            let mut __durable_locals = ::std::vec::Vec::new();
            #(#reads;)*
            let __durable_nested = match #render {
                ::core::result::Result::Ok(__durable_n) => __durable_n,
                ::core::result::Result::Err(__durable_f) => return #krate::__support_v1::fault(__durable_f),
            };
            *__durable_out = ::core::option::Option::Some(#krate::__support_v1::RenderedFrame {
                point: ::std::string::String::from(#identity),
                locals: __durable_locals,
                nested: __durable_nested,
            });
        })
    }
}

/// The type witness of binding `b`, declared once for the whole machine: every piece that reads,
/// lists or renders the local names its type through it.
fn type_marker(b: BindingId) -> syn::Ident {
    format_ident!("__durable_ty{}", b, span = Span::mixed_site())
}

struct ReplaceGotos<'a, 'b>(&'a Ctx<'b>);

impl VisitMut for ReplaceGotos<'_, '_> {
    fn visit_expr_mut(&mut self, e: &mut syn::Expr) {
        if let syn::Expr::Path(p) = e
            && let Some(id) = p.path.get_ident()
            && let Some(n) = id.to_string().strip_prefix("__durable_goto_")
            && let Ok(g) = n.parse::<usize>()
        {
            let tokens = self.0.goto(g);
            *e = syn::Expr::Verbatim(tokens);
            return;
        }
        syn::visit_mut::visit_expr_mut(self, e);
    }
    fn visit_macro_mut(&mut self, mac: &mut syn::Macro) {
        use syn::parse::Parser;
        let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if mac.tokens.to_string().contains("__durable_goto_")
            && let Ok(mut args) = parser.parse2(mac.tokens.clone())
        {
            args.iter_mut().for_each(|a| self.visit_expr_mut(a));
            mac.tokens = hygienic!(#args);
        }
    }
}

/// `tokens`, all at one span: located at the user's `span`, resolved at the macro's mixed site.
/// A bound that generated code checks on the user's behalf then fails at the user's token (the
/// `.await`, the binding), and since every check of one token has the very same span, rustc
/// reports it once. Only for tokens that name absolute paths and the macro's own (mixed-site)
/// locals.
fn located_at(tokens: TokenStream, span: Span) -> TokenStream {
    let span = Span::mixed_site().located_at(span);
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut located = Group::new(g.delimiter(), located_at(g.stream(), span));
                located.set_span(span);
                TokenTree::Group(located)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// Whether `tokens` contain the identifier `name`.
fn names_ident(tokens: TokenStream, name: &str) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == name,
        TokenTree::Group(g) => names_ident(g.stream(), name),
        _ => false,
    })
}

fn first_span<T: quote::ToTokens>(t: &T) -> Span {
    t.to_token_stream().into_iter().next().map_or_else(Span::call_site, |t| t.span())
}

/// The input type: the single parameter's type, or a tuple of them, reported at the first one.
fn input_type(inputs: &[(syn::Pat, syn::Type)]) -> TokenStream {
    match inputs {
        [(_, ty)] => hygienic!(#ty),
        _ => {
            let tys = inputs.iter().map(|(_, t)| t);
            let mut tuple = Group::new(Delimiter::Parenthesis, hygienic!(#(#tys,)*));
            if let Some((_, first)) = inputs.first() {
                tuple.set_span(Span::mixed_site().located_at(first_span(first)));
            }
            TokenStream::from(TokenTree::Group(tuple))
        }
    }
}

/// Asserts that each input type can be stored, at the type.
fn input_asserts(inputs: &[(syn::Pat, syn::Type)], krate: &TokenStream) -> TokenStream {
    inputs
        .iter()
        .map(|(_, ty)| {
            located_at(hygienic!(#krate::__support_v1::assert_input::<#ty>();), first_span(ty))
        })
        .collect()
}

/// `T` and `E` of a return type written `Result<T, E>`.
pub(crate) fn result_parts(ty: &syn::Type) -> Option<(&syn::Type, &syn::Type)> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    if p.qself.is_some() || last.ident != "Result" || args.args.len() != 2 {
        return None;
    }
    match (&args.args[0], &args.args[1]) {
        (syn::GenericArgument::Type(ok), syn::GenericArgument::Type(err)) => Some((ok, err)),
        _ => None,
    }
}

fn doc_attrs(attrs: &[syn::Attribute]) -> impl Iterator<Item = &syn::Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("doc") || a.path().is_ident("cfg"))
}

/// The names users write: a struct in the type namespace (`Handle<invoice>`, `Call<charge>`) and
/// a `const fn` of the same name in the value namespace (`rt.start(invoice, ..)`,
/// `ctx.call(charge, ..)`). A function, unlike a unit struct, can be shadowed by a local of the
/// same name.
pub(crate) fn named_item(
    vis: &syn::Visibility,
    ident: &syn::Ident,
    generics: &syn::Generics,
    docs: &[&syn::Attribute],
) -> TokenStream {
    let params: Vec<&syn::Ident> = generics.type_params().map(|t| &t.ident).collect();
    let (impl_g, ty_g, where_c) = generics.split_for_impl();
    let marker = format_ident!("__durable_types", span = Span::mixed_site());
    let (field, init) = if params.is_empty() {
        (hygienic!(), hygienic!())
    } else {
        (
            hygienic!(#marker: ::core::marker::PhantomData<fn() -> (#(#params,)*)>),
            hygienic!(#marker: ::core::marker::PhantomData),
        )
    };
    let name = ident.to_string();
    hygienic! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #vis struct #ident #impl_g #where_c { #field }

        #(#docs)*
        #[allow(dead_code)]
        #[inline]
        #vis const fn #ident #impl_g () -> #ident #ty_g #where_c { #ident { #init } }

        #[automatically_derived]
        impl #impl_g ::core::clone::Clone for #ident #ty_g #where_c {
            fn clone(&self) -> Self { *self }
        }
        #[automatically_derived]
        impl #impl_g ::core::marker::Copy for #ident #ty_g #where_c {}
        #[automatically_derived]
        impl #impl_g ::core::default::Default for #ident #ty_g #where_c {
            fn default() -> Self { #ident { #init } }
        }
        #[automatically_derived]
        impl #impl_g ::core::fmt::Debug for #ident #ty_g #where_c {
            fn fmt(&self, __durable_f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result { __durable_f.write_str(#name) }
        }
    }
}

pub(crate) fn orchestration(
    f: &OrchestrationFn,
    m: &Machine,
    args: &Args,
    krate: &TokenStream,
) -> TokenStream {
    let item = &f.item;
    let (vis, ident) = (&item.vis, &item.sig.ident);
    let name = args.name.as_ref().map_or_else(|| ident.to_string(), |(n, _)| n.clone());
    let version = args.version.unwrap_or(1);
    let output = &f.output;
    let input_ty = input_type(&f.inputs);
    let points = m.points.iter().enumerate().filter(|(_, p)| m.reachable[p.resume]).map(|(_, p)| {
        let identity = &p.identity;
        let line = quote_spanned!(p.span=> ::core::line!());
        let locals = m.blocks[p.resume].live_in.iter().map(|b| &m.bindings[*b].name);
        hygienic!(#krate::__support_v1::PointInfo { identity: #identity, line: #line, locals: &[#(#locals),*] })
    });
    let (activities, children) = crate::analyze::dependencies(&f.item.block, &f.ctx);
    let output_assert = quote_spanned!(first_span(output)=> type Output = #output;);
    let step = format_ident!("__durable_step", span = Span::mixed_site());
    let finish = located_at(hygienic!(#krate::__support_v1::finish(#step)), first_span(output));
    let docs: Vec<&syn::Attribute> = doc_attrs(&item.attrs).collect();
    let generics = &item.sig.generics;
    let named = named_item(vis, ident, generics, &docs);
    let (impl_g, ty_g, where_c) = generics.split_for_impl();
    let turbofish = ty_g.as_turbofish();
    let machine = machine(f, m, krate);
    let static_points =
        m.points.iter().enumerate().filter(|(_, p)| m.reachable[p.resume]).map(|(_, p)| {
            let (identity, operation) = (&p.identity, &p.operation);
            let line = quote_spanned!(p.span=> ::core::line!());
            hygienic!(#krate::__support_v1::StaticPoint {
                identity: #identity, file: ::core::file!(), line: #line, operation: #operation,
            })
        });
    let node = |a: crate::graph::At| match a {
        crate::graph::At::Start => "start".to_owned(),
        crate::graph::At::End => "end".to_owned(),
        crate::graph::At::Point(p) => m.points[p].identity.clone(),
    };
    let edges = crate::graph::edges(m).into_iter().map(|(from, to)| {
        let (from, to) = (node(from), node(to));
        hygienic!((#from, #to))
    });
    hygienic! {
        #named

        const _: () = {
            #[automatically_derived]
            impl #impl_g #krate::__support_v1::Orchestration for #ident #ty_g #where_c {
                type Input = #input_ty;
                #output_assert
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;
                fn points(&self) -> &'static [#krate::__support_v1::PointInfo] {
                    &[#(#points),*]
                }
                fn register(&self, __durable_registry: &mut #krate::__support_v1::Registry) {
                    #(__durable_registry.add_activity(#activities);)*
                    #(__durable_registry.add_orchestration(#children);)*
                    // What the `.await`s' types need: the durable functions called.
                    let _ = __durable_machine #turbofish (
                        &#krate::__support_v1::detached_ctx(),
                        #krate::__support_v1::Entry::Register(__durable_registry),
                    );
                }
                fn step(
                    &self,
                    __durable_ctx: &#krate::__support_v1::Ctx,
                    __durable_resume: #krate::__support_v1::Resume<'_>,
                ) -> #krate::__support_v1::StepResult {
                    let #step = __durable_machine #turbofish (
                        __durable_ctx,
                        #krate::__support_v1::Entry::of(__durable_resume),
                    );
                    #finish
                }
                fn graph(&self) -> #krate::__support_v1::StepGraph {
                    let mut __durable_layouts = ::std::vec::Vec::new();
                    let _ = __durable_machine #turbofish (
                        &#krate::__support_v1::detached_ctx(),
                        #krate::__support_v1::Entry::Describe(&mut __durable_layouts),
                    );
                    #krate::__support_v1::graph(
                        #name,
                        #version,
                        &[#(#static_points),*],
                        &__durable_layouts,
                        &[#(#edges),*],
                    )
                }
                fn render(
                    &self,
                    __durable_frame: &#krate::__support_v1::Frame,
                ) -> ::core::result::Result<#krate::__support_v1::RenderedFrame, #krate::__support_v1::Fault> {
                    let mut __durable_out = ::core::option::Option::None;
                    let __durable_step = __durable_machine #turbofish (
                        &#krate::__support_v1::detached_ctx(),
                        #krate::__support_v1::Entry::Render(__durable_frame, &mut __durable_out),
                    );
                    #krate::__support_v1::rendered(__durable_step, __durable_out)
                }
            }

            #machine
        };
    }
}

/// A `#[durable_fn]`: the function users call, which returns the call (`Nested`) that the
/// caller's machine awaits, a hidden type naming the function's machine, and the machine.
pub(crate) fn durable_fn(f: &OrchestrationFn, m: &Machine, krate: &TokenStream) -> TokenStream {
    let item = &f.item;
    let (vis, ident) = (&item.vis, &item.sig.ident);
    let output = &f.output;
    let marker = format_ident!("__DurableFn_{}", ident);
    let ctx_ty = &f.ctx_ty;
    let params: Vec<syn::Ident> = (0..f.inputs.len())
        .map(|i| format_ident!("__durable_arg{}", i, span = Span::mixed_site()))
        .collect();
    let tys: Vec<&syn::Type> = f.inputs.iter().map(|(_, t)| t).collect();
    let name = ident.to_string();
    let (activities, children) = crate::analyze::dependencies(&f.item.block, &f.ctx);
    let docs = doc_attrs(&item.attrs);
    let machine = machine(f, m, krate);
    let doc = format!(
        "The machine of durable function [`{name}`]; generated by `#[durable_fn]`, not for use."
    );
    hygienic! {
        #(#docs)*
        #[allow(clippy::needless_lifetimes)]
        #vis fn #ident(_: #ctx_ty, #(#params: #tys),*) -> #krate::__support_v1::Nested<#marker> {
            #krate::__support_v1::Nested::new((#(#params,)*))
        }

        #[doc = #doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #marker;

        const _: () = {
            #[automatically_derived]
            impl #krate::__support_v1::DurableFn for #marker {
                type Args = (#(#tys,)*);
                type Output = #output;
                const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", #name);
                fn step(
                    __durable_ctx: &#krate::__support_v1::Ctx,
                    __durable_entry: #krate::__support_v1::Entry<'_, Self::Args>,
                ) -> #krate::__support_v1::Step<Self::Output> {
                    __durable_machine(__durable_ctx, __durable_entry)
                }
                fn register(__durable_registry: &mut #krate::__support_v1::Registry) {
                    #(__durable_registry.add_activity(#activities);)*
                    #(__durable_registry.add_orchestration(#children);)*
                }
            }

            #machine
        };
    }
}

/// The step machine of an orchestration or a durable function: entered with its input (an
/// orchestration's encoded, a durable function's arguments), at a later step, or in register
/// mode.
fn machine(f: &OrchestrationFn, m: &Machine, krate: &TokenStream) -> TokenStream {
    let item = &f.item;
    let output = &f.output;
    let input_ty = input_type(&f.inputs);
    let cx = Ctx { m, krate, tied: assigned_bindings(m) };
    let witnesses = cx.tied.iter().map(|b| witness(*b));
    let tie = tie_fn();
    let order: Vec<usize> = m.arm_order();

    // The state enum: one type parameter per stored binding and per awaited operation.
    let mut params: Vec<syn::Ident> = Vec::new();
    let mut binding_param = std::collections::BTreeMap::<BindingId, syn::Ident>::new();
    let mut variants = Vec::new();
    for &b in &order {
        let block = &m.blocks[b];
        let mut fields = Vec::new();
        for id in &block.live_in {
            let p = binding_param.entry(*id).or_insert_with(|| {
                let p = format_ident!("__DurableT{}", id);
                params.push(p.clone());
                p
            });
            let fi = &m.bindings[*id].ident;
            fields.push(hygienic!(#fi: #p));
        }
        if let BlockKind::Resume(p) = block.kind {
            let op = format_ident!("__DurableOp{}", p);
            params.push(op.clone());
            let opf = op_field(m);
            fields.push(hygienic!(#opf: #krate::__support_v1::Slot<#op>));
        }
        let v = variant(b);
        variants.push(hygienic!(#v { #(#fields),* }));
    }
    let st = state_ident();
    let holes = params.iter().map(|_| hygienic!(_));
    let completion = completion_ident();
    let var = var_ident();
    let l = label();
    let arms = order.iter().map(|b| cx.arm(*b));
    let decodes = order.iter().filter_map(|b| match m.blocks[*b].kind {
        BlockKind::Resume(p) => Some(cx.decode_point(p)),
        _ => None,
    });
    let items = &m.items;
    let ctx_pat = &f.ctx;
    let ctx_ty = &f.ctx_ty;
    let entry_fields = m.blocks[0].live_in.iter().map(|b| &m.bindings[*b].ident);
    let input = format_ident!("__durable_input", span = Span::mixed_site());
    let input_pats = f.inputs.iter().map(|(p, _)| p);

    // The first step: the inputs bound by the user's patterns.
    let (entry_ty, bind_ctx, start) = if f.durable_fn {
        let tys = f.inputs.iter().map(|(_, t)| t);
        (
            hygienic!((#(#tys,)*)),
            hygienic!(let #ctx_pat: #ctx_ty = __durable_ctx;),
            hygienic!(let (#(#input_pats,)*) = #input;),
        )
    } else {
        let input_asserts = input_asserts(&f.inputs, krate);
        let decode_input = hygienic!(#krate::__support_v1::decode_input(#input));
        let decode_input = match f.inputs.as_slice() {
            [(_, ty)] => located_at(decode_input, first_span(ty)),
            _ => decode_input,
        };
        let bind_inputs = match f.inputs.len() {
            1 => hygienic!(let #(#input_pats)* : #input_ty = __durable_decoded;),
            _ => hygienic!(let (#(#input_pats,)*) : #input_ty = __durable_decoded;),
        };
        (
            hygienic!(&[u8]),
            hygienic!(let #ctx_pat: #ctx_ty = ::core::clone::Clone::clone(__durable_ctx);),
            hygienic! {
                #input_asserts
                let __durable_decoded: #input_ty = match #decode_input {
                    ::core::result::Result::Ok(__durable_v) => __durable_v,
                    ::core::result::Result::Err(__durable_f) => return #krate::__support_v1::fault(__durable_f),
                };
                #bind_inputs
            },
        )
    };
    let generics = &item.sig.generics;
    let (impl_g, _, where_c) = generics.split_for_impl();
    let resumed: Vec<usize> = order
        .iter()
        .filter_map(|b| match m.blocks[*b].kind {
            BlockKind::Resume(p) => Some(p),
            _ => None,
        })
        .collect();
    let stored: BTreeSet<BindingId> = resumed
        .iter()
        .flat_map(|p| m.blocks[m.points[*p].resume].live_in.iter().copied())
        .collect();
    let type_markers = stored.iter().map(|b| type_marker(*b));
    let describes = resumed.iter().map(|p| cx.describe_point(*p));
    let renders = resumed.iter().map(|p| cx.render_point(*p));
    let points: Vec<usize> = (0..m.points.len()).collect();
    let slot_types: Vec<syn::Ident> = points.iter().map(|p| slot_witness(*p)).collect();
    let registers = points.iter().map(|p| {
        let w = slot_witness(*p);
        let register = located_at(
            hygienic!(#krate::__support_v1::Slot::register(&#w, __durable_registry)),
            m.points[*p].span,
        );
        hygienic!(#register;)
    });
    hygienic! {
        #[allow(
            unused_mut, unused_variables, unused_assignments, unreachable_code, unused_braces,
            unused_imports, unused_macros,
            unused_parens, non_snake_case, non_camel_case_types, dead_code, clippy::all,
            clippy::pedantic, clippy::nursery
        )]
        fn __durable_machine #impl_g (
            __durable_ctx: &#krate::__support_v1::Ctx,
            __durable_entry: #krate::__support_v1::Entry<'_, #entry_ty>,
        ) -> #krate::__support_v1::Step<#output> #where_c {
            #(#items)*
            enum #st<#(#params),*> { #(#variants),* }
            fn #tie<T>(_: &::core::marker::PhantomData<T>, _: &T) {}
            #(let #slot_types = ::core::marker::PhantomData;)*
            #(let #type_markers = ::core::marker::PhantomData;)*
            #(let #witnesses = ::core::marker::PhantomData;)*
            #bind_ctx
            let mut #completion: ::core::option::Option<#krate::__support_v1::Completion> =
                ::core::option::Option::None;
            let mut #var = match __durable_entry {
                // Register mode: each awaited type registers what it needs (a durable
                // function, its activities), from the types the steps below infer.
                #krate::__support_v1::Entry::Register(__durable_registry) => {
                    #(#registers)*
                    return #krate::__support_v1::registered();
                }
                #krate::__support_v1::Entry::Describe(__durable_layouts) => {
                    #(#describes)*
                    return #krate::__support_v1::registered();
                }
                #krate::__support_v1::Entry::Render(__durable_frame, __durable_out) => {
                    match __durable_frame.point.as_str() {
                        #(#renders)*
                        _ => return #krate::__support_v1::fault(#krate::__support_v1::unknown_point(__durable_frame)),
                    }
                    return #krate::__support_v1::registered();
                }
                #krate::__support_v1::Entry::Start(#input) => {
                    #start
                    #st::B0 { #(#entry_fields),* }
                }
                #krate::__support_v1::Entry::Later(__durable_later) => {
                    let ::core::option::Option::Some((__durable_frame, __durable_live, __durable_c)) =
                        #krate::__support_v1::resume_parts(__durable_later)
                    else {
                        return #krate::__support_v1::fault(#krate::__support_v1::Fault::Corrupt(
                            ::std::string::String::from("unsupported resume")));
                    };
                    #completion = ::core::option::Option::Some(__durable_c);
                    // The state the previous step of this process left in memory, or, after
                    // a restart, the one decoded from the frame.
                    match #krate::__support_v1::take_live::<#st<#(#holes),*>>(__durable_live) {
                        ::core::option::Option::Some(__durable_kept) => __durable_kept,
                        ::core::option::Option::None => match __durable_frame.point.as_str() {
                            #(#decodes)*
                            _ => return #krate::__support_v1::fault(#krate::__support_v1::unknown_point(__durable_frame)),
                        },
                    }
                }
            };
            #l: loop {
                match #var {
                    #(#arms)*
                }
            }
        }
    }
}

pub(crate) fn activity(f: &ActivityFn, args: &Args, krate: &TokenStream) -> TokenStream {
    let item = &f.item;
    let (vis, ident) = (&item.vis, &item.sig.ident);
    let docs = doc_attrs(&item.attrs);
    let name = args.name.as_ref().map_or_else(|| ident.to_string(), |(n, _)| n.clone());
    let output = &f.output;
    let input_ty = input_type(&f.inputs);
    let inputs = &item.sig.inputs;
    let body = &item.block;
    let attrs = item.attrs.iter().filter(|a| !a.path().is_ident("doc"));
    let temps: Vec<_> = (0..f.inputs.len())
        .map(|i| format_ident!("__durable_in{}", i, span = Span::mixed_site()))
        .collect();
    let bind = match f.inputs.len() {
        1 => quote::quote!(let #(#temps)* = __durable_input;),
        _ => quote::quote!(let (#(#temps,)*) = __durable_input;),
    };
    // Arguments of the direct call, in parameter order, with the context where it was.
    let mut call_args: Vec<TokenStream> = temps.iter().map(|t| quote::quote!(#t)).collect();
    if let Some((pos, _)) = &f.ctx {
        let by_ref = item.sig.inputs.iter().nth(*pos).is_some_and(
            |a| matches!(a, syn::FnArg::Typed(t) if matches!(*t.ty, syn::Type::Reference(_))),
        );
        let c = if by_ref { quote::quote!(&__durable_actx) } else { quote::quote!(__durable_actx) };
        call_args.insert((*pos).min(call_args.len()), c);
    }
    // `Result<T, E>` as written: `T` and `E` are checked at their own spans by the bounds of
    // `Activity::Ok` and `Activity::Err`. Any other return type (an alias) goes through
    // `ActivityOutput`.
    let (ok, err, into_result) = match result_parts(output) {
        Some((ok, err)) => {
            (quote::quote!(#ok), quote::quote!(#err), quote::quote!(::core::convert::identity))
        }
        None => {
            let output_as = |assoc: TokenStream| {
                located_at(
                    quote::quote!(<#output as #krate::__support_v1::ActivityOutput>::#assoc),
                    first_span(output),
                )
            };
            let into_result = located_at(
                quote::quote!(#krate::__support_v1::ActivityOutput::into_result),
                first_span(output),
            );
            (output_as(quote::quote!(Ok)), output_as(quote::quote!(Err)), into_result)
        }
    };
    let input_asserts = input_asserts(&f.inputs, krate);
    let docs: Vec<&syn::Attribute> = docs.collect();
    let named = named_item(vis, ident, &syn::Generics::default(), &docs);
    // `retry = expr`: the expression as written, so a type error lands on it.
    let retry_policy = args.retry.as_ref().map(|policy| {
        quote::quote! {
            fn retry_policy() -> #krate::__support_v1::RetryPolicy {
                #policy
            }
        }
    });
    // `retry_if = f`: coerced to a function pointer, which gives a closure its parameter's type
    // (and refuses one that captures, with the error at the user's expression).
    let should_retry = args.retry_if.as_ref().map(|predicate| {
        let error = syn::Ident::new("__durable_error", Span::mixed_site());
        let f = syn::Ident::new("__durable_retry_if", Span::mixed_site());
        quote::quote! {
            fn should_retry(#error: &#krate::__support_v1::ActivityError<Self::Err>) -> bool {
                let #f: fn(&#krate::__support_v1::ActivityError<Self::Err>) -> bool = #predicate;
                #f(#error)
            }
        }
    });
    // Call-site spans here: a failed bound of `invoke` is then reported once, at the
    // user's return type (its locals are all `__durable_` names).
    quote::quote! {
        #named

        impl #ident {
            /// Runs the activity's body directly: no recording, no retries.
            #(#attrs)*
            #vis async fn run(#inputs) -> #output #body
        }

        const _: () = {
            #[allow(dead_code, clippy::all)]
            fn __durable_assert_inputs() { #input_asserts }

            #[automatically_derived]
            impl #krate::__support_v1::Activity for #ident {
                type Input = #input_ty;
                type Ok = #ok;
                type Err = #err;
                const NAME: &'static str = #name;
                #[allow(clippy::all)]
                fn invoke(
                    &self,
                    __durable_actx: #krate::__support_v1::ActivityContext,
                    __durable_input: Self::Input,
                ) -> impl ::core::future::Future<Output = ::core::result::Result<Self::Ok, Self::Err>>
                       + ::core::marker::Send + 'static {
                    #bind
                    async move {
                        #into_result(#ident::run(#(#call_args),*).await)
                    }
                }
                #retry_policy
                #should_retry
            }
        };
    }
}
