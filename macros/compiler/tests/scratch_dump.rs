#[test]
fn dump() {
    let src: proc_macro2::TokenStream = std::fs::read_to_string("/tmp/model.txt").unwrap().parse().unwrap();
    let code = kiln_compiler::expand(src).unwrap_or_else(|e| e.to_compile_error());
    let file: syn::File = syn::parse2(code).unwrap();
    std::fs::write("/tmp/expanded.rs", prettyplease::unparse(&file)).unwrap();
}
