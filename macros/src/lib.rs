//! `#[contained]`, put on a `#[pymethods]` block (above `#[pymethods]`) or a
//! `#[pyfunction]`: each method's body runs under
//! `crate::panic_guard::contain`, so a Rust panic in it reaches the caller as
//! an ordinary `RuntimeError` instead of PyO3's `PanicException` (a
//! `BaseException`). A method that returns a plain value is made to return
//! `PyResult` of it. `__traverse__` and `__clear__` are left alone: the
//! collector calls them, and they must not build Python objects.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, parse_quote, Block, ImplItem, Item, ReturnType, Signature, Type};

/// Methods the garbage collector calls: no exception can be raised there.
const LEFT_ALONE: [&str; 2] = ["__traverse__", "__clear__"];

#[proc_macro_attribute]
pub fn contained(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut item = parse_macro_input!(item as Item);
    match &mut item {
        Item::Impl(block) => {
            for member in &mut block.items {
                if let ImplItem::Fn(f) = member {
                    if !LEFT_ALONE.iter().any(|name| f.sig.ident == name) {
                        wrap(&mut f.sig, &mut f.block);
                    }
                }
            }
        }
        Item::Fn(f) => wrap(&mut f.sig, &mut f.block),
        other => {
            return syn::Error::new_spanned(other, "#[contained] goes on an impl block or a fn")
                .to_compile_error()
                .into()
        }
    }
    quote!(#item).into()
}

/// Puts `block` under `contain`; a body that returns `T` (not a `Result`)
/// becomes `Ok(T)` and the signature `PyResult<T>`. The original body is a
/// closure of its own so that its `return`s keep their meaning.
fn wrap(sig: &mut Signature, block: &mut Block) {
    let body = &*block;
    let wrapped: Block = match &sig.output {
        ReturnType::Type(_, ty) if is_result(ty) => {
            parse_quote!({ crate::panic_guard::contain(|| #body) })
        }
        output => {
            let ty: Type = match output {
                ReturnType::Type(_, ty) => (**ty).clone(),
                ReturnType::Default => parse_quote!(()),
            };
            sig.output = parse_quote!(-> ::pyo3::PyResult<#ty>);
            parse_quote!({ crate::panic_guard::contain(|| ::pyo3::PyResult::Ok((|| #body)())) })
        }
    };
    *block = wrapped;
}

/// Whether `ty` is spelled `Result<..>` or `PyResult<..>`.
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "Result" || last.ident == "PyResult"),
        _ => false,
    }
}
