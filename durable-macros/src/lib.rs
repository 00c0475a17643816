//! placeholder
use proc_macro::TokenStream;
/// x
#[proc_macro_attribute]
pub fn orchestration(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
/// x
#[proc_macro_attribute]
pub fn activity(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
