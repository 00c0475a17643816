//! The signatures the macros accept, checked and taken apart.

use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

use crate::error::Errors;

/// An `#[orchestration]` function.
pub(crate) struct OrchestrationFn {
    pub item: ItemFn,
    /// The context parameter's pattern (usually `ctx`) and type.
    pub ctx: Pat,
    pub ctx_ty: Type,
    /// The other parameters.
    pub inputs: Vec<(Pat, Type)>,
    pub output: Type,
    /// A `#[durable_fn]` (context by reference, arguments passed as they are) rather than an
    /// orchestration.
    pub durable_fn: bool,
}

/// An `#[activity]` function.
pub(crate) struct ActivityFn {
    pub item: ItemFn,
    /// The `ActivityContext` parameter, if it takes one, and its position.
    pub ctx: Option<(usize, Pat)>,
    pub inputs: Vec<(Pat, Type)>,
    pub output: Type,
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    let ty = match ty {
        Type::Reference(r) => &*r.elem,
        t => t,
    };
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == name))
}

/// The first reference in a type (`&str`, `Vec<&[u8]>`), if any.
pub(crate) fn first_reference(ty: &Type) -> Option<&syn::TypeReference> {
    struct Find<'a>(Option<&'a syn::TypeReference>);
    impl<'a> syn::visit::Visit<'a> for Find<'a> {
        fn visit_type_reference(&mut self, r: &'a syn::TypeReference) {
            self.0.get_or_insert(r);
        }
    }
    let mut find = Find(None);
    syn::visit::Visit::visit_type(&mut find, ty);
    find.0
}

/// The first `Self` in a function's signature or body (outside nested items): the function is
/// an associated function of an `impl`, where the macros cannot declare the type they declare.
pub(crate) fn self_type_use(item: &ItemFn) -> Option<proc_macro2::Span> {
    use syn::visit::Visit;
    fn in_tokens(tokens: proc_macro2::TokenStream) -> Option<proc_macro2::Span> {
        tokens.into_iter().find_map(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) if i == "Self" => Some(i.span()),
            proc_macro2::TokenTree::Group(g) => in_tokens(g.stream()),
            _ => None,
        })
    }
    struct Find(Option<proc_macro2::Span>);
    impl<'a> Visit<'a> for Find {
        fn visit_path(&mut self, p: &'a syn::Path) {
            match p.segments.first() {
                Some(s) if s.ident == "Self" => {
                    self.0.get_or_insert(s.ident.span());
                }
                _ => syn::visit::visit_path(self, p),
            }
        }
        fn visit_macro(&mut self, m: &'a syn::Macro) {
            if let Some(span) = in_tokens(m.tokens.clone()) {
                self.0.get_or_insert(span);
            }
        }
        fn visit_item(&mut self, _: &'a syn::Item) {}
    }
    let mut find = Find(None);
    find.visit_signature(&item.sig);
    find.visit_block(&item.block);
    find.0
}

pub(crate) fn in_impl_message(attr: &str) -> String {
    format!(
        "`{attr}` goes on a free function, not on an associated function of an `impl`: it \
         declares a type of the same name, which an `impl` cannot hold; move the function out of \
         the `impl` and call what it needs as `Type::function(..)`"
    )
}

/// Inputs and outputs are stored with the instance: no borrowed types.
fn check_owned<'a>(tys: impl IntoIterator<Item = &'a Type>, what: &str, errors: &Errors) {
    for ty in tys {
        if let Some(r) = first_reference(ty) {
            errors.at(
                r,
                format!(
                    "{what} stores its inputs and outputs, so they cannot borrow; take an owned \
                     type (`String` for `&str`, `Vec<T>` for `&[T]`)"
                ),
            );
        }
    }
}

fn common_checks(item: &ItemFn, what: &str, errors: &Errors) {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        errors.at(sig.fn_token, format!("{what} must be an `async fn`: add `async` before `fn`"));
    }
    if let Some(c) = &sig.constness {
        errors.at(c, format!("{what} cannot be `const`"));
    }
    if let syn::Safety::Unsafe(u) = &sig.safety {
        errors.at(u, format!("{what} cannot be `unsafe`"));
    }
    if let Some(abi) = &sig.abi {
        errors.at(abi, format!("{what} cannot have an ABI"));
    }
    if let Some(v) = &sig.variadic {
        errors.at(v, format!("{what} cannot be variadic"));
    }
    if let Some(r) = sig.receiver() {
        errors.at(r, format!(
            "{what} cannot take `self`: it is stored and resumed by name, without an object; make it \
             a free function and pass what it needs as input"
        ));
    }
    let only_types = sig.generics.params.iter().all(|p| matches!(p, syn::GenericParam::Type(_)));
    if what == "an activity" && !sig.generics.params.is_empty() {
        errors.at(
            &sig.generics,
            "an activity cannot be generic: it is dispatched by name with a \
            stored input of one type; write one activity per type",
        );
    } else if !only_types {
        errors.at(
            &sig.generics,
            format!(
                "{what} can only have type parameters (stored values own their data): remove the \
             lifetime or const parameter"
            ),
        );
    }
    for arg in &sig.inputs {
        if let FnArg::Typed(t) = arg
            && let Type::ImplTrait(_) = &*t.ty
        {
            errors.at(
                &t.ty,
                format!("{what} parameters need a concrete, serializable type, not `impl Trait`"),
            );
        }
    }
}

fn output_type(item: &ItemFn, what: &str, errors: &Errors) -> Type {
    match &item.sig.output {
        ReturnType::Type(_, ty) => {
            if let Type::ImplTrait(_) = &**ty {
                errors.at(
                    ty,
                    format!("{what} must return a concrete `Result<T, E>`, not `impl Trait`"),
                );
            }
            (**ty).clone()
        }
        ReturnType::Default => {
            errors.at(
                &item.sig.ident,
                format!("{what} must return `Result<T, E>`: add `-> Result<T, E>`"),
            );
            syn::parse_quote!(())
        }
    }
}

impl OrchestrationFn {
    pub(crate) fn parse(item: ItemFn, errors: &Errors) -> Option<Self> {
        const WHAT: &str = "an orchestration";
        common_checks(&item, WHAT, errors);
        let output = output_type(&item, WHAT, errors);
        let mut args = item.sig.inputs.iter().filter_map(|a| match a {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        });
        let mut inputs = Vec::new();
        let (ctx, ctx_ty) = match args.next() {
            Some(first) if last_segment_is(&first.ty, "Ctx") => {
                if let Type::Reference(r) = &*first.ty {
                    errors.at(r.and_token, "take the context by value: `ctx: Ctx`");
                }
                ((*first.pat).clone(), (*first.ty).clone())
            }
            first => {
                let message = "the first parameter of an orchestration must be its context: \
                               `ctx: Ctx`";
                match first {
                    Some(first) => errors.at(first, message),
                    None => errors.at(&item.sig.ident, format!("{message}; add it")),
                }
                // Every parameter is an input: the unit struct's stub still gets the signature.
                inputs.extend(first.map(|t| ((*t.pat).clone(), (*t.ty).clone())));
                (syn::parse_quote!(_), syn::parse_quote!(Ctx))
            }
        };
        inputs.extend(args.map(|t| ((*t.pat).clone(), (*t.ty).clone())));
        check_owned(inputs.iter().map(|(_, t)| t).chain([&output]), WHAT, errors);
        Some(Self { item, ctx, ctx_ty, inputs, output, durable_fn: false })
    }
}

impl OrchestrationFn {
    /// A `#[durable_fn]`: `async fn(ctx: &Ctx, args…) -> T`, any return type, owned arguments.
    pub(crate) fn parse_durable_fn(item: ItemFn, errors: &Errors) -> Option<Self> {
        const WHAT: &str = "a durable function";
        common_checks(&item, WHAT, errors);
        if !item.sig.generics.params.is_empty() {
            errors.at(
                &item.sig.generics,
                "a durable function cannot be generic: its frame is stored with its caller's \
                 under one layout; write one function per type",
            );
        }
        let output = match &item.sig.output {
            ReturnType::Type(_, ty) => {
                if let Type::ImplTrait(_) = &**ty {
                    errors.at(ty, format!("{WHAT} must return a concrete type, not `impl Trait`"));
                }
                (**ty).clone()
            }
            ReturnType::Default => syn::parse_quote!(()),
        };
        let mut args = item.sig.inputs.iter().filter_map(|a| match a {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        });
        let message = "the first parameter of a durable function must be the caller's context, \
                       by reference: `ctx: &Ctx`";
        let (ctx, ctx_ty) = match args.next() {
            Some(first) if last_segment_is(&first.ty, "Ctx") => {
                if !matches!(&*first.ty, Type::Reference(r) if r.mutability.is_none()) {
                    errors.at(&first.ty, message);
                }
                ((*first.pat).clone(), (*first.ty).clone())
            }
            Some(first) => {
                errors.at(first, message);
                return None;
            }
            None => {
                errors.at(&item.sig.ident, format!("{message}; add it"));
                return None;
            }
        };
        let inputs: Vec<(Pat, Type)> = args.map(|t| ((*t.pat).clone(), (*t.ty).clone())).collect();
        for (_, ty) in &inputs {
            if let Some(r) = first_reference(ty) {
                errors.at(
                    r,
                    "a durable function's arguments are kept in its frame, so they cannot \
                     borrow; take an owned type (`String` for `&str`, `Vec<T>` for `&[T]`)",
                );
            }
        }
        if let Some(r) = first_reference(&output) {
            errors.at(r, format!("{WHAT} cannot return a borrowed value"));
        }
        Some(Self { item, ctx, ctx_ty, inputs, output, durable_fn: true })
    }
}

impl ActivityFn {
    pub(crate) fn parse(item: ItemFn, errors: &Errors) -> Option<Self> {
        const WHAT: &str = "an activity";
        common_checks(&item, WHAT, errors);
        let output = output_type(&item, WHAT, errors);
        let mut ctx = None;
        let mut inputs = Vec::new();
        for (i, arg) in item.sig.inputs.iter().enumerate() {
            let FnArg::Typed(t) = arg else { continue };
            if last_segment_is(&t.ty, "Ctx") {
                errors.at(
                    &t.ty,
                    "an activity does not take the orchestration context; take \
                    `ctx: ActivityContext` for its idempotency key and attempt",
                );
            } else if last_segment_is(&t.ty, "ActivityContext") {
                if ctx.is_some() {
                    errors.at(&t.ty, "the `ActivityContext` parameter is given twice");
                }
                ctx = Some((i, (*t.pat).clone()));
            } else {
                inputs.push(((*t.pat).clone(), (*t.ty).clone()));
            }
        }
        check_owned(inputs.iter().map(|(_, t)| t).chain([&output]), WHAT, errors);
        Some(Self { item, ctx, inputs, output })
    }
}
