//! The `#[orchestration]` and `#[activity]` attributes of durable. Use them through the `durable`
//! crate, which re-exports them with the runtime they expand against.
//!
//! The orchestration macro is a small compiler: `args` and `ast` parse, `analyze` resolves names
//! and finds what lives where, `lower` turns control flow into a step machine (`ir`), `expand`
//! writes the tokens. Errors are collected (`error`) and all reported at once.

mod analyze;
mod args;
mod ast;
mod error;
mod expand;
mod graph;
mod ir;
mod lower;
mod site;

use proc_macro::TokenStream;
use proc_macro_crate::FoundCrate;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::visit_mut::{self, VisitMut};

use crate::args::Args;
use crate::error::Errors;

/// Turns an `async fn(ctx: Ctx, input…) -> Result<T, E>` into a durable orchestration: a unit
/// struct of the same name that implements `durable::Orchestration`, whose body runs as a step
/// machine checkpointed at every durable `.await`.
///
/// Arguments: `name = "…"` (the stable stored name, default: the function's name),
/// `crate = "…"` (path of the `durable` crate; by default the name the crate being compiled gives
/// it in its `Cargo.toml`, so a renamed dependency works as it is).
#[proc_macro_attribute]
pub fn orchestration(args: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(refused) = associated("orchestration", &item) {
        return refused.into();
    }
    expand_orchestration(args.into(), item.into()).into()
}

/// Turns an `async fn(ctx: &Ctx, args…) -> T` into a durable function: code an orchestration
/// (or another durable function) reuses with `f(&ctx, args…).await`, compiled into a step
/// machine of its own whose frame is kept inside the caller's frame, with the same checkpoints,
/// liveness rules and crash guarantees as the orchestration's own body. Recursion works (each
/// level's frame is nested in the one above).
///
/// Arguments: `crate = "…"`, as for `orchestration`.
#[proc_macro_attribute]
pub fn durable_fn(args: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(refused) = associated("durable_fn", &item) {
        return refused.into();
    }
    expand_durable_fn(args.into(), item.into()).into()
}

/// Turns an `async fn(input…) -> Result<T, E>` into an activity: a unit struct of the same name
/// that implements `durable::Activity`, called from orchestrations with `ctx.call(name, input)`.
/// The body stays callable directly as `name::run(…)`. A parameter of type `ActivityContext`
/// receives the idempotency key and attempt number.
///
/// Arguments: `name = "…"`, `crate = "…"`, as for `orchestration`; and the activity's retry
/// defaults, for every call that sets no policy of its own:
/// - `retry = <expr>`: a `RetryPolicy` (`retry = RetryPolicy::attempts(3)`), the policy of a
///   call without `.with_retry(..)`;
/// - `retry_if = <fn or closure>`: a predicate `fn(&ActivityError<E>) -> bool` deciding whether
///   a failed attempt is retried (DTFx `Handle`), besides `ActivityContext::do_not_retry`. It is
///   code, and code is not stored: it belongs to the activity rather than to a call site
///   because a call site does not run again when a restarted process resumes the call (nothing
///   is replayed), while every process that runs an attempt has the activity registered.
#[proc_macro_attribute]
pub fn activity(args: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(refused) = associated("activity", &item) {
        return refused.into();
    }
    expand_activity(args.into(), item.into()).into()
}

/// The error for an attribute on an associated function that names neither `self` nor `Self`
/// (those are told by the function alone), found in the source file: see [`site`].
fn associated(attr: &str, item: &TokenStream) -> Option<TokenStream2> {
    let item_fn: syn::ItemFn = syn::parse(item.clone()).ok()?;
    if item_fn.sig.receiver().is_some() || !site::in_impl(attr, &item_fn.sig.ident) {
        return None;
    }
    let errors = Errors::default();
    errors.at(&item_fn.sig.ident, ast::in_impl_message(&format!("#[{attr}]")));
    Some(in_impl_fallback(&errors, item_fn))
}

fn krate(args: &Args) -> TokenStream2 {
    match &args.krate {
        Some(p) => quote!(#p),
        None => facade_path(),
    }
}

/// The `durable` facade as the crate being compiled names it: `::dur` for a dependency declared
/// `dur = { package = "durable", .. }` in its `Cargo.toml` (dependencies or dev-dependencies),
/// `::durable` otherwise, and in the `durable` package itself, whose tests and examples see it as
/// `durable`.
fn facade_path() -> TokenStream2 {
    match proc_macro_crate::crate_name("durable") {
        Ok(FoundCrate::Name(name)) => {
            let name = syn::Ident::new(&name, Span::call_site());
            quote!(::#name)
        }
        Ok(FoundCrate::Itself) | Err(_) => quote!(::durable),
    }
}

fn expand_orchestration(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let errors = Errors::default();
    let args = Args::parse(args, args::Kind::Orchestration, &errors);
    let item_fn: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(e.span(), "`#[orchestration]` goes on an `async fn`");
            return quote!(#item).into_iter().chain(e.to_compile_error()).collect();
        }
    };
    let krate = krate(&args);
    let Some(f) = ast::OrchestrationFn::parse(item_fn.clone(), &errors) else {
        return fallback_orchestration(&errors, &item_fn, None, &krate);
    };
    if item_fn.sig.receiver().is_some() {
        return in_impl_fallback(&errors, item_fn);
    }
    if let Some(span) = ast::self_type_use(&item_fn) {
        errors.at_span(span, ast::in_impl_message("#[orchestration]"));
        return in_impl_fallback(&errors, item_fn);
    }
    analyze::check_await_positions(&f.item.block, &f.ctx, &errors);
    let inputs: Vec<syn::Pat> = f.inputs.iter().map(|(p, _)| p.clone()).collect();
    let mut machine = lower::lower(&f.item.block, &inputs, &krate, &errors);
    analyze::liveness(&mut machine, &errors);
    if !errors.is_empty() {
        return fallback_orchestration(&errors, &item_fn, Some(&f), &krate);
    }
    expand::orchestration(&f, &machine, &args, &krate)
}

fn expand_durable_fn(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let errors = Errors::default();
    let args = Args::parse(args, args::Kind::DurableFn, &errors);
    let item_fn: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(e.span(), "`#[durable_fn]` goes on an `async fn`");
            return quote!(#item).into_iter().chain(e.to_compile_error()).collect();
        }
    };
    let krate = krate(&args);
    if item_fn.sig.receiver().is_some() {
        let f = ast::OrchestrationFn::parse_durable_fn(item_fn.clone(), &errors);
        drop(f);
        return in_impl_fallback(&errors, item_fn);
    }
    if let Some(span) = ast::self_type_use(&item_fn) {
        errors.at_span(span, ast::in_impl_message("#[durable_fn]"));
        return in_impl_fallback(&errors, item_fn);
    }
    let Some(f) = ast::OrchestrationFn::parse_durable_fn(item_fn.clone(), &errors) else {
        return fallback_durable_fn(&errors, item_fn);
    };
    analyze::check_await_positions(&f.item.block, &f.ctx, &errors);
    let inputs: Vec<syn::Pat> = f.inputs.iter().map(|(p, _)| p.clone()).collect();
    let mut machine = lower::lower(&f.item.block, &inputs, &krate, &errors);
    analyze::liveness(&mut machine, &errors);
    if !errors.is_empty() {
        return fallback_durable_fn(&errors, item_fn);
    }
    expand::durable_fn(&f, &machine, &krate)
}

/// On error: every error, and the function as written (awaits left unreported), so callers and
/// its body are still type-checked as far as they can be.
fn fallback_durable_fn(errors: &Errors, mut item: syn::ItemFn) -> TokenStream2 {
    let errs = errors.to_compile_errors();
    item.attrs.retain(|a| a.path().is_ident("doc"));
    UnreportedAwaits::default().visit_block_mut(&mut item.block);
    quote!(#errs #[allow(dead_code, unused)] #item)
}

/// On error, for a method (it has a `self` receiver, so it sits in an `impl`, where no struct can
/// be declared): every error, and the method as written.
fn in_impl_fallback(errors: &Errors, mut item: syn::ItemFn) -> TokenStream2 {
    let errs = errors.to_compile_errors();
    UnreportedAwaits::default().visit_block_mut(&mut item.block);
    quote!(#errs #item)
}

/// On error: every error, plus the unit struct (so uses elsewhere type-check) and the original
/// function, hidden, so its body is still type-checked.
fn fallback_orchestration(
    errors: &Errors,
    item: &syn::ItemFn,
    f: Option<&ast::OrchestrationFn>,
    krate: &TokenStream2,
) -> TokenStream2 {
    let errs = errors.to_compile_errors();
    let (vis, ident) = (&item.vis, &item.sig.ident);
    let named = expand::named_item(vis, ident, &syn::Generics::default(), &[]);
    // No trait impl without a `Result` return type: its own error would repeat the macro's.
    let stub = f.filter(|f| returns_result(&f.output) && owned(&f.inputs, &f.output)).map(|f| {
        let output = &f.output;
        let input = match f.inputs.as_slice() {
            [(_, t)] => quote!(#t),
            many => {
                let t = many.iter().map(|(_, t)| t);
                quote!((#(#t,)*))
            }
        };
        let name = ident.to_string();
        quote! {
            #[automatically_derived]
            impl #krate::__support_v1::Orchestration for #ident {
                type Input = #input;
                type Output = #output;
                const NAME: &'static str = #name;
                fn points(&self) -> &'static [#krate::__support_v1::PointInfo] { &[] }
                fn register(&self, _: &mut #krate::__support_v1::Registry) {}
                fn step(&self, _: &#krate::__support_v1::Ctx, _: #krate::__support_v1::Resume<'_>) -> #krate::__support_v1::StepResult {
                    ::core::unreachable!("this orchestration did not compile")
                }
            }
        }
    });
    let mut original = item.clone();
    original.attrs.retain(|a| a.path().is_ident("doc"));
    UnreportedAwaits::default().visit_block_mut(&mut original.block);
    quote! {
        #errs
        #named
        #stub
        const _: () = {
            #[allow(dead_code, unused)]
            #original
        };
    }
}

fn expand_activity(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let errors = Errors::default();
    let args = Args::parse(args, args::Kind::Activity, &errors);
    let item_fn: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(e.span(), "`#[activity]` goes on an `async fn`");
            return quote!(#item).into_iter().chain(e.to_compile_error()).collect();
        }
    };
    let krate = krate(&args);
    if item_fn.sig.receiver().is_none()
        && let Some(span) = ast::self_type_use(&item_fn)
    {
        errors.at_span(span, ast::in_impl_message("#[activity]"));
        return in_impl_fallback(&errors, item_fn);
    }
    let f = ast::ActivityFn::parse(item_fn.clone(), &errors);
    match f {
        Some(f) if errors.is_empty() => expand::activity(&f, &args, &krate),
        _ if item_fn.sig.receiver().is_some() => in_impl_fallback(&errors, item_fn),
        f => fallback_activity(&errors, &item_fn, f.as_ref(), &args, &krate),
    }
}

/// On error: every error, the unit struct with its `Activity` impl (so that orchestrations that
/// call it type-check), and the function as the struct's `run`, so its body is still checked.
fn fallback_activity(
    errors: &Errors,
    item: &syn::ItemFn,
    f: Option<&ast::ActivityFn>,
    args: &Args,
    krate: &TokenStream2,
) -> TokenStream2 {
    let errs = errors.to_compile_errors();
    let (vis, ident) = (&item.vis, &item.sig.ident);
    let named = expand::named_item(vis, ident, &syn::Generics::default(), &[]);
    let stub = f.filter(|f| owned(&f.inputs, &f.output)).and_then(|f| {
        let (ok, err) = expand::result_parts(&f.output)?;
        let input = match f.inputs.as_slice() {
            [(_, t)] => quote!(#t),
            many => {
                let t = many.iter().map(|(_, t)| t);
                quote!((#(#t,)*))
            }
        };
        let name = args
            .name
            .as_ref()
            .map_or_else(|| ident.to_string(), |(n, _)| n.clone());
        Some(quote! {
            #[automatically_derived]
            impl #krate::__support_v1::Activity for #ident {
                type Input = #input;
                type Ok = #ok;
                type Err = #err;
                const NAME: &'static str = #name;
                fn invoke(
                    &self,
                    _: #krate::__support_v1::ActivityContext,
                    _: Self::Input,
                ) -> impl ::core::future::Future<Output = ::core::result::Result<Self::Ok, Self::Err>>
                       + ::core::marker::Send + 'static {
                    async { ::core::unreachable!("this activity did not compile") }
                }
            }
        })
    });
    let mut run = item.clone();
    run.attrs.retain(|a| a.path().is_ident("doc"));
    run.sig.ident = syn::Ident::new("run", ident.span());
    quote! {
        #errs
        #named
        impl #ident {
            #[allow(dead_code, unused)]
            #run
        }
        #stub
    }
}

/// Whether no input or output type borrows (the macro reported those that do).
fn owned(inputs: &[(syn::Pat, syn::Type)], output: &syn::Type) -> bool {
    inputs.iter().map(|(_, t)| t).chain([output]).all(|t| ast::first_reference(t).is_none())
}

/// Whether a return type is written `Result<…>` (an alias such as `io::Result<T>` counts).
fn returns_result(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Result"))
}

/// In the copy of the body kept on error: each `.await` inside a closure that is not `async`,
/// which the macro has reported, becomes a call with the type the `.await` would have, so that
/// rustc does not report it a second time ("`await` is only allowed inside `async` functions").
#[derive(Default)]
struct UnreportedAwaits {
    /// Inside a closure that is not `async` (and not in an async block within it).
    in_closure: bool,
}

impl VisitMut for UnreportedAwaits {
    fn visit_expr_mut(&mut self, e: &mut syn::Expr) {
        match e {
            syn::Expr::Closure(c) => {
                let outer = std::mem::replace(&mut self.in_closure, c.asyncness.is_none());
                visit_mut::visit_expr_closure_mut(self, c);
                self.in_closure = outer;
            }
            syn::Expr::Async(a) => {
                let outer = std::mem::replace(&mut self.in_closure, false);
                visit_mut::visit_expr_async_mut(self, a);
                self.in_closure = outer;
            }
            syn::Expr::Await(a) if self.in_closure => {
                self.visit_expr_mut(&mut a.base);
                let base = &a.base;
                let span = a.await_token.span;
                *e = syn::parse_quote_spanned!(span=> {
                    fn __durable_awaited<F: ::core::future::IntoFuture>(_: F) -> F::Output {
                        ::core::unreachable!()
                    }
                    __durable_awaited(#base)
                });
            }
            _ => visit_mut::visit_expr_mut(self, e),
        }
    }
    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token text, one statement or brace per line, indented: enough to read and diff.
    fn pretty(tokens: TokenStream2) -> String {
        let text = tokens.to_string();
        let mut out = String::new();
        let mut depth = 0usize;
        let mut line = String::new();
        let flush = |line: &mut String, depth: usize, out: &mut String| {
            let t = line.trim();
            if !t.is_empty() {
                out.push_str(&"    ".repeat(depth));
                out.push_str(t);
                out.push('\n');
            }
            line.clear();
        };
        for c in text.chars() {
            match c {
                '{' => {
                    line.push('{');
                    flush(&mut line, depth, &mut out);
                    depth += 1;
                }
                '}' => {
                    flush(&mut line, depth, &mut out);
                    depth = depth.saturating_sub(1);
                    line.push('}');
                    flush(&mut line, depth, &mut out);
                }
                ';' | ',' if line.trim().is_empty() && out.ends_with("}\n") => {
                    out.pop();
                    out.push(c);
                    out.push('\n');
                    line.clear();
                }
                ';' => {
                    line.push(';');
                    flush(&mut line, depth, &mut out);
                }
                c => line.push(c),
            }
        }
        flush(&mut line, depth, &mut out);
        out
    }

    /// Expands `item` and compares with `tests/expand/<name>.expanded.txt` in this crate; with
    /// `DURABLE_BLESS=1`, writes the file instead. Review the diff of a blessed file like code.
    fn expansion_snapshot(name: &str, args: &str, item: &str) {
        let args: TokenStream2 = args.parse().unwrap_or_default();
        let item: TokenStream2 = item.parse().unwrap_or_default();
        let actual = pretty(expand_orchestration(args, item));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/expand")
            .join(format!("{name}.expanded.txt"));
        if std::env::var_os("DURABLE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap_or(&path)).ok();
            std::fs::write(&path, &actual).ok();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "expansion of `{name}` changed; review it and bless with DURABLE_BLESS=1:\n{actual}"
        );
    }

    #[test]
    fn expansion_of_a_straight_line_orchestration() {
        expansion_snapshot(
            "straight_line",
            "crate = \"::durable\"",
            "async fn invoice(ctx: Ctx, data: Data) -> Result<Id, Failure> {
                let id = ctx.call(issue, data).await?;
                ctx.call(notify, id.clone()).await?;
                Ok(id)
            }",
        );
    }

    #[test]
    fn expansion_of_a_loop_with_a_branch() {
        expansion_snapshot(
            "loop_with_branch",
            "crate = \"::durable\"",
            "async fn sum(ctx: Ctx, n: u64) -> Result<u64, Failure> {
                let mut total = 0;
                for i in 0..n {
                    if i % 2 == 0 {
                        total = ctx.call(add, (total, i)).await?;
                    }
                }
                Ok(total)
            }",
        );
    }

    /// The macros never panic: on any input they produce tokens (code or errors).
    #[test]
    fn never_panics_on_odd_input() {
        let bodies = [
            "ctx.call(a, 1).await.await",
            "let x; if c { x = ctx.call(a, 1).await?; } else { x = 2; } Ok(x)",
            "match ctx.call(a, 1).await? {}",
            "for (a, b) in ctx.call(f, 1).await? { ctx.call(g, a).await?; } Ok(b)",
            "'a: loop { if ctx.call(a, 1).await? { continue 'a; } break 'b; }",
            "loop { break ctx.call(a, 1).await?; }",
            "let v = loop {}; Ok(v)",
            "return; ctx.call(a, 1).await?",
            "let f = async move { ctx.call(a, 1).await }; Ok(())",
            "let Some(x) = ctx.call(a, 1).await? else { return Err(e) }; Ok(x)",
            "while let Some(x) = ctx.call(a, 1).await? { if x { break } } Ok(())",
            "{ { { ctx.call(a, 1).await? } } }",
            "unsafe { ctx.call(a, 1).await? }",
            "let x = [ctx.call(a, 1).await?; 3]; Ok(x)",
            "let x = if let Some(y) = ctx.call(a, 1).await? && y > 2 { y } else { 0 }; Ok(x)",
            "(ctx.call(a, 1).await?, ctx.call(b, 2).await?).0",
            "ctx.call(a, 1).await?.field.method(ctx.call(b, 2).await?)",
            "let r = &mut x; *r = ctx.call(a, 1).await?; Ok(x)",
            "{ const C: u8 = 1; use a::b; macro_rules! m { () => { x } } ctx.call(a, m!()).await?; }",
            "x = match ctx.call(a, 1).await? { 0 => 1, v => v }; x += if c { ctx.call(a, 2).await? } else { 0 };",
            "for i in (1..).map(|i| i * 2).filter(|i| *i > 2) { ctx.call(a, i).await?; break; }",
            "for (i, n) in names.iter().enumerate() { ctx.call(a, (i, n)).await?; } for n in &v {}",
            "let x; x = ctx.call(a, 1).await?; let N = x; Ok(f(N, g(), ctx.call(b, 2).await?))",
            "tokio::join!(ctx.call(a, 1), ctx.call(b, 2)); ctx.set_status(\"x\")",
            "",
        ];
        let sigs = [
            "async fn f(ctx: Ctx, x: u64) -> Result<u64, Failure>",
            "async fn f(ctx: Ctx) -> Result<(), Failure>",
            "fn f(ctx: Ctx) -> u8",
            "async fn f<'a, T, const N: usize>(ctx: &'a Ctx, (a, b): (T, [u8; N])) -> impl Sized",
            "async fn f(self, ctx: Ctx)",
            "async fn f(ctx: Ctx) -> Result<Self, Failure>",
            "async unsafe extern \"C\" fn f(ctx: Ctx, ...) -> Result<u64, Failure>",
        ];
        let args = [
            "",
            "name = \"x\"",
            "version = 0",
            "version = \"2\"",
            "crate = \"::\"",
            "a b c",
            "name",
        ];
        for sig in sigs {
            for body in bodies {
                for arg in args {
                    let item: TokenStream2 = match format!("{sig} {{ {body} }}").parse() {
                        Ok(t) => t,
                        Err(_) => continue,
                    };
                    let arg: TokenStream2 = arg.parse().unwrap_or_default();
                    let o = std::panic::catch_unwind(|| {
                        expand_orchestration(arg.clone(), item.clone())
                    });
                    assert!(
                        o.is_ok(),
                        "orchestration panicked on `{sig} {{ {body} }}` with `{arg}`"
                    );
                    let a = std::panic::catch_unwind(|| expand_activity(arg.clone(), item.clone()));
                    assert!(a.is_ok(), "activity panicked on `{sig} {{ {body} }}` with `{arg}`");
                }
            }
        }
        for garbage in
            ["", "struct S;", "fn", "async fn f(", "{}", "impl X { async fn f(&self) {} }"]
        {
            let item: TokenStream2 = garbage.parse().unwrap_or_default();
            assert!(
                std::panic::catch_unwind(|| expand_orchestration(
                    TokenStream2::new(),
                    item.clone()
                ))
                .is_ok()
            );
            assert!(
                std::panic::catch_unwind(|| expand_activity(TokenStream2::new(), item.clone()))
                    .is_ok()
            );
        }
    }
}
