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
mod ir;
mod lower;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;

use crate::args::Args;
use crate::error::Errors;

/// Turns an `async fn(ctx: Ctx, input…) -> Result<T, E>` into a durable orchestration: a unit
/// struct of the same name that implements `durable::Orchestration`, whose body runs as a step
/// machine checkpointed at every durable `.await`.
///
/// Arguments: `name = "…"` (the stable stored name, default: the function's name),
/// `crate = "…"` (path of the `durable` crate when renamed).
#[proc_macro_attribute]
pub fn orchestration(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_orchestration(args.into(), item.into()).into()
}

/// Turns an `async fn(input…) -> Result<T, E>` into an activity: a unit struct of the same name
/// that implements `durable::Activity`, called from orchestrations with `ctx.call(name, input)`.
/// The body stays callable directly as `name::run(…)`. A parameter of type `ActivityContext`
/// receives the idempotency key and attempt number.
///
/// Arguments: `name = "…"`, `crate = "…"`, as for `orchestration`.
#[proc_macro_attribute]
pub fn activity(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_activity(args.into(), item.into()).into()
}

fn krate(args: &Args) -> TokenStream2 {
    match &args.krate {
        Some(p) => quote!(#p),
        None => quote!(::durable),
    }
}

fn expand_orchestration(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let errors = Errors::default();
    let args = Args::parse(args, &errors);
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
    analyze::check_await_positions(&f.item.block, &errors);
    let inputs: Vec<syn::Pat> = f.inputs.iter().map(|(p, _)| p.clone()).collect();
    let mut machine = lower::lower(&f.item.block, &inputs, &krate, &errors);
    analyze::liveness(&mut machine, &errors);
    if !errors.is_empty() {
        return fallback_orchestration(&errors, &item_fn, Some(&f), &krate);
    }
    expand::orchestration(&f, &machine, &args, &krate)
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
    let stub = f.map(|f| {
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
            impl #krate::__private::Orchestration for #ident {
                type Input = #input;
                type Output = #output;
                const NAME: &'static str = #name;
                fn points(&self) -> &'static [#krate::__private::PointInfo] { &[] }
                fn register(&self, _: &mut #krate::__private::Registry) {}
                fn step(&self, _: &#krate::__private::Ctx, _: #krate::__private::Resume<'_>) -> #krate::__private::StepResult {
                    ::core::unreachable!("this orchestration did not compile")
                }
            }
        }
    });
    let mut original = item.clone();
    original.attrs.retain(|a| a.path().is_ident("doc"));
    quote! {
        #errs
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #ident;
        #stub
        const _: () = {
            #[allow(dead_code, unused)]
            #original
        };
    }
}

fn expand_activity(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let errors = Errors::default();
    let args = Args::parse(args, &errors);
    let item_fn: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(e.span(), "`#[activity]` goes on an `async fn`");
            return quote!(#item).into_iter().chain(e.to_compile_error()).collect();
        }
    };
    let krate = krate(&args);
    let f = ast::ActivityFn::parse(item_fn.clone(), &errors);
    match f {
        Some(f) if errors.is_empty() => expand::activity(&f, &args, &krate),
        _ => {
            let errs = errors.to_compile_errors();
            quote!(#errs #item_fn)
        }
    }
}
