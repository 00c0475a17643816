//! Attribute arguments of `#[orchestration(..)]` and `#[activity(..)]`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, Meta, Token};

use crate::error::Errors;

/// The arguments both attributes accept.
#[derive(Default)]
pub(crate) struct Args {
    /// `name = "..."`: the stable stored name.
    pub name: Option<(String, Span)>,
    /// `crate = "path"`: where the `durable` facade is, when renamed.
    pub krate: Option<syn::Path>,
    /// `version = N`: the orchestration's version (default 1).
    pub version: Option<u32>,
    /// `retry = <expr>`: an activity's default retry policy (a `RetryPolicy` expression).
    pub retry: Option<Expr>,
    /// `retry_if = <expr>`: an activity's retry predicate (a function or closure taking
    /// `&ActivityError<E>` and returning `bool`).
    pub retry_if: Option<Expr>,
}

/// Which attribute the arguments belong to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Orchestration,
    Activity,
    DurableFn,
}

impl Kind {
    fn valid(self) -> &'static str {
        match self {
            Kind::Orchestration => {
                "expected one of: `name = \"...\"`, `version = N`, `crate = \"...\"`"
            }
            Kind::Activity => {
                "expected one of: `name = \"...\"`, `crate = \"...\"`, `retry = <RetryPolicy>`, \
                 `retry_if = <fn(&ActivityError<E>) -> bool>`"
            }
            Kind::DurableFn => "expected `crate = \"...\"`",
        }
    }
}

impl Args {
    pub(crate) fn parse(tokens: TokenStream, kind: Kind, errors: &Errors) -> Args {
        let valid = kind.valid();
        let mut args = Args::default();
        let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
            Ok(m) => m,
            Err(e) => {
                errors.push(syn::Error::new(e.span(), format!("{e}; {valid}")));
                return args;
            }
        };
        for meta in metas {
            let Meta::NameValue(nv) = &meta else {
                errors.at(&meta, format!("unknown argument; {valid}"));
                continue;
            };
            let key = nv.path.get_ident().map(ToString::to_string).unwrap_or_default();
            if kind == Kind::DurableFn && key != "crate" {
                errors.at(
                    &nv.path,
                    format!(
                        "unknown argument `{key}`; a durable function is not stored by name (its \
                         frame lives in its caller's): {valid}"
                    ),
                );
                continue;
            }
            if key == "version" && kind == Kind::Activity {
                errors.at(
                    &nv.path,
                    "`version` applies to orchestrations; an activity is versioned by its `name`",
                );
                continue;
            }
            if matches!(key.as_str(), "retry" | "retry_if") {
                let slot = if key == "retry" { &mut args.retry } else { &mut args.retry_if };
                if kind != Kind::Activity {
                    errors.at(
                        &nv.path,
                        format!(
                            "`{key}` applies to activities; a sub-orchestration is retried with \
                             `ctx.child(..).with_retry(policy)`"
                        ),
                    );
                } else if slot.is_some() {
                    errors.at(&nv.path, format!("`{key}` is given twice"));
                } else if let Expr::Lit(l) = &nv.value {
                    let what = if key == "retry" {
                        "a `RetryPolicy` expression, e.g. `retry = RetryPolicy::attempts(3)`"
                    } else {
                        "a function or closure taking `&ActivityError<E>` and returning `bool`, \
                         e.g. `retry_if = is_transient`"
                    };
                    errors.at(l, format!("`{key}` takes {what}"));
                } else {
                    *slot = Some(nv.value.clone());
                }
                continue;
            }
            if key == "version" {
                let parsed = match &nv.value {
                    Expr::Lit(l) => match &l.lit {
                        Lit::Int(i) => i.base10_parse::<u32>().ok().filter(|v| *v > 0),
                        _ => None,
                    },
                    _ => None,
                };
                match parsed {
                    _ if args.version.is_some() => errors.at(&nv.path, "`version` is given twice"),
                    Some(v) => args.version = Some(v),
                    None => errors
                        .at(&nv.value, "`version` takes a positive integer, e.g. `version = 2`"),
                }
                continue;
            }
            let value = match &nv.value {
                Expr::Lit(l) => match &l.lit {
                    Lit::Str(s) => Some(s.clone()),
                    _ => None,
                },
                _ => None,
            };
            let Some(value) = value else {
                errors.at(&nv.value, format!("`{key}` takes a string literal"));
                continue;
            };
            match key.as_str() {
                "name" => {
                    if args.name.is_some() {
                        errors.at(&nv.path, "`name` is given twice");
                    } else if value.value().trim().is_empty() {
                        errors.at(&value, "`name` must not be empty");
                    } else {
                        args.name = Some((value.value(), value.span()));
                    }
                }
                "crate" => {
                    if args.krate.is_some() {
                        errors.at(&nv.path, "`crate` is given twice");
                    } else {
                        match value.parse::<syn::Path>() {
                            Ok(p) => args.krate = Some(p),
                            Err(e) => errors.at(&value, format!("`crate` must be a path: {e}")),
                        }
                    }
                }
                _ => errors.at(&nv.path, format!("unknown argument `{key}`; {valid}")),
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn parses_and_reports_every_problem() {
        let errors = Errors::default();
        let a = Args::parse(quote!(name = "x", crate = "my::d"), Kind::Activity, &errors);
        assert!(errors.is_empty());
        assert_eq!(a.name.unwrap().0, "x");
        let errors = Errors::default();
        Args::parse(quote!(nme = "x", name = 3, name = "a", name = "b"), Kind::Activity, &errors);
        let m = errors.messages();
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("unknown argument `nme`"));
        assert!(m[1].contains("takes a string literal"));
        assert!(m[2].contains("given twice"));
    }

    #[test]
    fn retry_arguments_belong_to_activities_once_each() {
        let errors = Errors::default();
        let a = Args::parse(
            quote!(retry = RetryPolicy::attempts(3), retry_if = |e| e.is_ok()),
            Kind::Activity,
            &errors,
        );
        assert!(errors.is_empty(), "{:?}", errors.messages());
        assert!(a.retry.is_some() && a.retry_if.is_some());
        let errors = Errors::default();
        Args::parse(quote!(retry = p(), retry = p(), retry_if = "f"), Kind::Activity, &errors);
        let m = errors.messages();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("`retry` is given twice"), "{m:?}");
        assert!(m[1].contains("`retry_if` takes a function or closure"), "{m:?}");
        let errors = Errors::default();
        Args::parse(quote!(retry = p()), Kind::Orchestration, &errors);
        assert!(errors.messages()[0].contains("`retry` applies to activities"));
    }
}
