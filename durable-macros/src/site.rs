//! Where an attribute was written, read from the source file itself.
//!
//! An attribute macro sees its function and nothing around it. On an associated function that
//! names neither `self` nor `Self`, the expansion (a type of the function's name) is refused by
//! rustc with errors about structs, impls and consts that do not name the cause. To report the
//! cause instead, the macros read the file the attribute is written in (the compiler gives its
//! path) and look for the function there: if every function of that name carrying the attribute
//! is an associated function, the attribute is on one. Reading cannot change the expansion of
//! correct code (the answer only turns an error into a clearer one), and when the file cannot be
//! read or parsed (generated code, a remapped path) the macros expand as before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

use syn::visit::Visit;

/// Whether the function `name` carrying the attribute `attr` (its last path segment, e.g.
/// `orchestration`) is written inside an `impl` (or a trait) of the file the attribute is in.
/// `false` when unknown. Only callable inside a procedural macro.
pub(crate) fn in_impl(attr: &str, name: &syn::Ident) -> bool {
    let Some(path) = proc_macro::Span::call_site().local_file() else {
        return false;
    };
    let name = name.to_string();
    with_file(path, |places| {
        let mut found = places.iter().filter(|p| p.attr == attr && p.name == name);
        let mut any = false;
        let all_in_impl = found.all(|p| {
            any = true;
            p.in_impl
        });
        any && all_in_impl
    })
}

/// A function carrying one of the macros' attributes, as written in a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Place {
    attr: String,
    name: String,
    in_impl: bool,
}

thread_local! {
    /// Parsed files by path and length, so a file with many attributes is parsed once per
    /// compilation.
    static FILES: RefCell<HashMap<PathBuf, (u64, Vec<Place>)>> = RefCell::default();
}

fn with_file<R>(path: PathBuf, f: impl FnOnce(&[Place]) -> R) -> R {
    FILES.with(|files| {
        let mut files = files.borrow_mut();
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let fresh = files.get(&path).is_some_and(|(l, _)| *l == len);
        if !fresh {
            let places = std::fs::read_to_string(&path).map(|s| places(&s)).unwrap_or_default();
            files.insert(path.clone(), (len, places));
        }
        f(&files[&path].1)
    })
}

/// Every function of `source` carrying an attribute, with whether it is associated. Empty when
/// the file does not parse, or names no `impl` or `trait` at all (then nothing is associated).
pub(crate) fn places(source: &str) -> Vec<Place> {
    if !source.contains("impl") && !source.contains("trait") {
        return Vec::new();
    }
    let Ok(file) = syn::parse_file(source) else {
        return Vec::new();
    };
    let mut walk = Walk { in_impl: false, places: Vec::new() };
    walk.visit_file(&file);
    walk.places
}

struct Walk {
    in_impl: bool,
    places: Vec<Place>,
}

impl Walk {
    fn note(&mut self, attrs: &[syn::Attribute], name: &syn::Ident) {
        for a in attrs {
            if let Some(last) = a.path().segments.last() {
                self.places.push(Place {
                    attr: last.ident.to_string(),
                    name: name.to_string(),
                    in_impl: self.in_impl,
                });
            }
        }
    }

    /// Visits a function body: items declared in it are free, wherever the function is.
    fn body(&mut self, block: &syn::Block) {
        let outer = std::mem::replace(&mut self.in_impl, false);
        self.visit_block(block);
        self.in_impl = outer;
    }
}

impl<'a> Visit<'a> for Walk {
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        self.note(&f.attrs, &f.sig.ident);
        self.body(&f.block);
    }
    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        self.note(&f.attrs, &f.sig.ident);
        self.body(&f.block);
    }
    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        self.note(&f.attrs, &f.sig.ident);
        if let Some(block) = &f.default {
            self.body(block);
        }
    }
    fn visit_item_impl(&mut self, i: &'a syn::ItemImpl) {
        let outer = std::mem::replace(&mut self.in_impl, true);
        syn::visit::visit_item_impl(self, i);
        self.in_impl = outer;
    }
    fn visit_item_trait(&mut self, t: &'a syn::ItemTrait) {
        let outer = std::mem::replace(&mut self.in_impl, true);
        syn::visit::visit_item_trait(self, t);
        self.in_impl = outer;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(source: &str) -> Vec<(String, String, bool)> {
        places(source).into_iter().map(|p| (p.attr, p.name, p.in_impl)).collect()
    }

    #[test]
    fn associated_and_free_functions_are_told_apart() {
        let source = r#"
            #[orchestration]
            async fn free(ctx: Ctx) -> Result<(), Failure> { Ok(()) }
            impl Workflows {
                #[durable::orchestration(name = "g")]
                async fn greet(ctx: Ctx, name: String) -> Result<String, Failure> {
                    #[activity]
                    async fn inner() -> Result<(), String> { Ok(()) }
                    Ok(name)
                }
            }
            trait T { #[activity] async fn t() -> Result<(), String>; }
            fn main() {
                #[orchestration]
                async fn local(ctx: Ctx) -> Result<(), Failure> { Ok(()) }
            }
        "#;
        let s = |a: &str, n: &str, i| (a.to_owned(), n.to_owned(), i);
        assert_eq!(
            found(source),
            vec![
                s("orchestration", "free", false),
                s("orchestration", "greet", true),
                s("activity", "inner", false),
                s("activity", "t", true),
                s("orchestration", "local", false),
            ]
        );
    }

    #[test]
    fn a_file_without_impls_or_that_does_not_parse_names_nothing() {
        assert!(found("#[orchestration] async fn f() {}").is_empty());
        assert!(found("impl {{{ not rust").is_empty());
    }
}
