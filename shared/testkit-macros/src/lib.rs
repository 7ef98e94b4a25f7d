//! The attribute behind `p2piano_testkit::both_modes` (see there): a proc macro so that a
//! module's test cases are named once, where they are written, and stay under rustfmt.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, Item, ItemMod, Token, Visibility, parse_macro_input};

/// `nats = <expr>, in_process = <expr>`: what each mode's cases are given.
struct Modes {
    nats: Expr,
    in_process: Expr,
}

impl Parse for Modes {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut nats = None;
        let mut in_process = None;
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            match key.to_string().as_str() {
                "nats" => nats = Some(value),
                "in_process" => in_process = Some(value),
                _ => {
                    return Err(syn::Error::new(
                        key.span(),
                        "expected `nats` or `in_process`",
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        let missing = |what| syn::Error::new(input.span(), format!("`{what} = ...` is missing"));
        Ok(Self {
            nats: nats.ok_or_else(|| missing("nats"))?,
            in_process: in_process.ok_or_else(|| missing("in_process"))?,
        })
    }
}

/// Runs every public `async fn` of the annotated inline module twice, as
/// `nats::<name>` and `in_process::<name>` beside the module; see
/// `p2piano_testkit::both_modes` for the whole contract.
#[proc_macro_attribute]
pub fn both_modes(attr: TokenStream, item: TokenStream) -> TokenStream {
    let modes = parse_macro_input!(attr as Modes);
    let module = parse_macro_input!(item as ItemMod);
    let Some((_, items)) = &module.content else {
        return syn::Error::new_spanned(&module, "#[both_modes] wants an inline module")
            .to_compile_error()
            .into();
    };
    let cases: Vec<Ident> = items
        .iter()
        .filter_map(|item| match item {
            Item::Fn(f) if f.sig.asyncness.is_some() && !matches!(f.vis, Visibility::Inherited) => {
                Some(f.sig.ident.clone())
            }
            _ => None,
        })
        .collect();
    if cases.is_empty() {
        return syn::Error::new_spanned(&module.ident, "no public async fn to run")
            .to_compile_error()
            .into();
    }
    let name = &module.ident;
    let mode = |mode: Ident, setup: &Expr| {
        quote! {
            mod #mode {
                #[allow(unused_imports)]
                use super::*;
                #(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn #cases() {
                        super::#name::#cases(#setup).await
                    }
                )*
            }
        }
    };
    let nats = mode(format_ident!("nats"), &modes.nats);
    let in_process = mode(format_ident!("in_process"), &modes.in_process);
    quote! {
        #module
        #nats
        #in_process
    }
    .into()
}
