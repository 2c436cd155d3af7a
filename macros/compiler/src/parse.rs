//! Stage 1: tokens -> [`crate::ast::ModelDef`].
//!
//! A hand-written recursive-descent parser on top of `syn`'s `ParseStream`. It takes the raw
//! token stream of the macro and returns the syntax tree with spans, or a spanned error. It
//! never panics: every unexpected token becomes a `syn::Error` saying what was expected.

use crate::ast::{BinOp, BlockDef, Call, DimAst, Expr, IntAst, ModelDef, Stmt};
use proc_macro2::{Delimiter, Span, TokenTree};
use syn::buffer::Cursor;
use syn::parse::{Parse, ParseStream};
use syn::{braced, bracketed, parenthesized, Attribute, Ident, Lit, Token, Visibility};

/// The statement keywords, for error messages.
const STATEMENTS: &str = "`input`, `target`, `let`, `output` or `loss`";
/// The statement keywords, for suggestions.
const KEYWORDS: &[&str] = &["input", "target", "let", "output", "loss"];

impl Parse for ModelDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "empty model: write `pub struct Name { input x: [B, 4]; let y = linear(x, 2); output y; }`",
            ));
        }
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        if !input.peek(Token![struct]) {
            return Err(
                input.error("expected `struct Name { ... }` (a model is declared like a struct)")
            );
        }
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        if input.peek(Token![<]) {
            return Err(input.error(
                "a model takes no generic parameters: it is generic over the float type already (`Name<f32>`, `Name<f64>`)",
            ));
        }
        let content;
        let brace = braced!(content in input);
        let mut stmts = Vec::new();
        let mut blocks = Vec::new();
        while !content.is_empty() {
            if content.peek(Ident) && content.peek2(Ident) && content.peek3(syn::token::Paren) {
                let fork = content.fork();
                let word: Ident = fork.parse()?;
                if word == "block" {
                    blocks.push(parse_block(&content)?);
                    continue;
                }
            }
            stmts.extend(parse_statements(&content)?);
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the model's closing brace"));
        }
        Ok(ModelDef {
            attrs,
            vis,
            name,
            stmts,
            blocks,
            grad_inputs: Vec::new(),
            body_span: brace.span.join(),
        })
    }
}

impl Parse for Stmt {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let start = input.cursor();
        if input.peek(Token![let]) {
            input.parse::<Token![let]>()?;
            let name: Ident = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a name after `let`, as in `let h = relu(x);`",
                )
            })?;
            if !input.peek(Token![=]) {
                return Err(input.error(format!(
                    "expected `=` after `let {name}` (no type annotations: shapes are inferred)"
                )));
            }
            input.parse::<Token![=]>()?;
            let expr = parse_expr(input)?;
            expect_semi(input, start)?;
            return Ok(Stmt::Let { name, expr });
        }
        let keyword: Ident = match input.parse() {
            Ok(k) => k,
            Err(_) => return Err(input.error(format!("expected a statement: {STATEMENTS}"))),
        };
        match keyword.to_string().as_str() {
            "input" => {
                let name: Ident = input.parse()?;
                let dims = parse_shape_annotation(input, &name)?;
                let ints = parse_int_kind(input)?;
                expect_semi(input, start)?;
                Ok(Stmt::Input { name, dims, ints })
            }
            "target" => {
                let name: Ident = input.parse()?;
                let dims = parse_shape_annotation(input, &name)?;
                let classes = if input.peek(Ident) {
                    let word: Ident = input.parse()?;
                    if word != "classes" {
                        return Err(syn::Error::new(
                            word.span(),
                            format!("unexpected `{word}`: a target is `target y: [B, 1];` or, for class labels, `target y: [B] classes 10;`"),
                        ));
                    }
                    let lit: Lit = input.parse().map_err(|e| {
                        syn::Error::new(e.span(), "expected the class count, as in `classes 10`")
                    })?;
                    Some(parse_positive_int(&lit, "a class count")?)
                } else {
                    None
                };
                expect_semi(input, start)?;
                Ok(Stmt::Target {
                    name,
                    dims,
                    classes,
                })
            }
            "output" => {
                let mut names = vec![input.parse::<Ident>()?];
                while input.peek(Token![,]) {
                    input.parse::<Token![,]>()?;
                    names.push(input.parse()?);
                }
                expect_semi(input, start)?;
                Ok(Stmt::Output { names })
            }
            "loss" => {
                let expr = parse_expr(input)?;
                expect_semi(input, start)?;
                Ok(Stmt::Loss {
                    keyword: keyword.span(),
                    expr,
                })
            }
            other => {
                let hint = crate::ops::closest(other, KEYWORDS.iter().copied())
                    .map(|k| format!("did you mean `{k}`? "))
                    .unwrap_or_default();
                Err(syn::Error::new(
                    keyword.span(),
                    format!(
                        "unknown statement `{other}`: {hint}(a statement starts with {STATEMENTS})"
                    ),
                ))
            }
        }
    }
}

/// Every statement up to the end of `input`.
fn parse_statements_until_end(input: ParseStream) -> syn::Result<Vec<Stmt>> {
    let mut stmts = Vec::new();
    while !input.is_empty() {
        stmts.extend(parse_statements(input)?);
    }
    Ok(stmts)
}

/// One statement, or the several that a tuple `let` unpacks into.
fn parse_statements(input: ParseStream) -> syn::Result<Vec<Stmt>> {
    if input.peek(Token![let]) && input.peek2(syn::token::Paren) {
        return parse_unpacking(input);
    }
    Ok(vec![input.parse::<Stmt>()?])
}

/// `let (q, k, v) = chunk(qkv, 3, axis = -1);` (`_` skips a part), for an op whose
/// [`OpSpec::unpacks`](crate::ops::OpSpec::unpacks): one `let` per name, each the same call with
/// the options `index = i` and `unpacked = n` added (see `ops::split`). The value cut
/// must be a name, so that repeating the call repeats no layer.
fn parse_unpacking(input: ParseStream) -> syn::Result<Vec<Stmt>> {
    const EXAMPLE: &str = "`let (q, k, v) = chunk(qkv, 3, axis = -1);`";
    let start = input.cursor();
    input.parse::<Token![let]>()?;
    let content;
    let paren = parenthesized!(content in input);
    let mut names: Vec<Option<Ident>> = Vec::new();
    while !content.is_empty() {
        if content.peek(Token![_]) {
            content.parse::<Token![_]>()?;
            names.push(None);
        } else {
            let name = content.parse::<Ident>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!(
                        "a tuple `let` names each part, or skips one with `_`, as in {EXAMPLE}"
                    ),
                )
            })?;
            names.push(Some(name));
        }
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    if names.iter().all(Option::is_none) {
        return Err(syn::Error::new(
            paren.span.join(),
            format!("this `let` names no value: name the parts it keeps, as in {EXAMPLE}"),
        ));
    }
    if !input.peek(Token![=]) {
        return Err(input.error("expected `=` after the names of a tuple `let`"));
    }
    input.parse::<Token![=]>()?;
    let expr = parse_expr(input)?;
    expect_semi(input, start)?;
    let call = match expr {
        Expr::Call(call)
            if crate::ops::lookup(&call.func.to_string()).is_some_and(|op| op.unpacks()) =>
        {
            call
        }
        other => {
            let ops: Vec<String> = crate::ops::unpacking_names()
                .map(|name| format!("`{name}`"))
                .collect();
            return Err(syn::Error::new(
                other.span(),
                format!(
                    "only {} give several values for a tuple `let` to unpack, as in {EXAMPLE}",
                    ops.join(" and ")
                ),
            ));
        }
    };
    if let Some(arg) = call.args.first().filter(|a| !matches!(a, Expr::Var(_))) {
        let names: Vec<String> = names.iter().flatten().map(Ident::to_string).collect();
        // `q, k, v` -> `qkv`; `value, gate` -> `value_gate`.
        let short = names.iter().all(|n| n.chars().count() == 1);
        let whole = names.join(if short { "" } else { "_" });
        return Err(syn::Error::new(
            arg.span(),
            format!(
                "`{}` cuts a named value: bind this one first, `let {whole} = ...;`, then `let ({}) = {}({whole}, ...);`",
                call.func,
                names.join(", "),
                call.func
            ),
        ));
    }
    if let Some((key, _)) = call
        .options
        .iter()
        .find(|(key, _)| key == "index" || key == "unpacked")
    {
        return Err(syn::Error::new(
            key.span(),
            format!("`{key}` is chosen by the tuple `let`, which takes every part in order: leave it out"),
        ));
    }
    let parts = names.len() as u64;
    Ok(names
        .into_iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let name = name?;
            let mut call = call.clone();
            let span = name.span();
            call.options
                .push((Ident::new("index", span), Expr::Int(i as u64, span)));
            call.options
                .push((Ident::new("unpacked", span), Expr::Int(parts, span)));
            Some(Stmt::Let {
                name,
                expr: Expr::Call(call),
            })
        })
        .collect())
}

/// `block Name(x, memory) { let ...; output y; }`
fn parse_block(input: ParseStream) -> syn::Result<BlockDef> {
    input.parse::<Ident>()?;
    let name: Ident = input.parse()?;
    let args;
    parenthesized!(args in input);
    let mut params = Vec::new();
    while !args.is_empty() {
        params.push(args.parse::<Ident>().map_err(|e| {
            syn::Error::new(
                e.span(),
                "a block's inputs are names, as in `block Layer(x, memory) { ... }`: their shapes come from the call",
            )
        })?);
        if args.is_empty() {
            break;
        }
        args.parse::<Token![,]>()?;
    }
    if params.is_empty() {
        return Err(syn::Error::new(
            name.span(),
            format!("block `{name}` takes no input: declare at least one, as in `block {name}(x) {{ ... }}`"),
        ));
    }
    if !input.peek(syn::token::Brace) {
        return Err(input.error(format!(
            "expected the body of block `{name}` in braces: `block {name}(x) {{ let h = ...; output h; }}`"
        )));
    }
    let content;
    let brace = braced!(content in input);
    let mut stmts = Vec::new();
    let mut output: Option<Ident> = None;
    for stmt in parse_statements_until_end(&content)? {
        match stmt {
            Stmt::Let { .. } => stmts.push(stmt),
            Stmt::Output { names } => {
                if let Some(first) = &output {
                    return Err(syn::Error::new(
                        names[0].span(),
                        format!("block `{name}` already returns `{first}`: a block has one `output`"),
                    ));
                }
                if names.len() > 1 {
                    return Err(syn::Error::new(
                        names[1].span(),
                        format!("a block returns one value; `{name}` names {}: combine them (e.g. `concat`) or split the block", names.len()),
                    ));
                }
                output = names.into_iter().next();
            }
            Stmt::Input { name: n, .. } | Stmt::Target { name: n, .. } => {
                return Err(syn::Error::new(
                    n.span(),
                    format!("a block's inputs are its parameters, `block {name}(x, ...)`, and its targets the model's: `input` and `target` belong in the model body"),
                ))
            }
            Stmt::Loss { keyword, .. } => {
                return Err(syn::Error::new(
                    keyword,
                    "a block has no loss: the model's `loss` statement sees the block's output",
                ))
            }
        }
    }
    let Some(output) = output else {
        return Err(syn::Error::new(
            brace.span.close(),
            format!("block `{name}` returns nothing: end it with `output NAME;` naming the value it returns"),
        ));
    };
    Ok(BlockDef {
        name,
        params,
        stmts,
        output,
    })
}

/// Parses the `;` ending the statement that began at `start`. Without one, the error points
/// at the statement's last token, where the `;` goes (as rustc does), not at the next line.
fn expect_semi(input: ParseStream, start: Cursor) -> syn::Result<()> {
    if input.peek(Token![;]) {
        input.parse::<Token![;]>()?;
        return Ok(());
    }
    let (end, mut cursor, mut last) = (input.cursor(), start, None);
    while cursor != end {
        let Some((tt, next)) = cursor.token_tree() else {
            break;
        };
        last = Some(match &tt {
            TokenTree::Group(g) => g.span_close(),
            other => other.span(),
        });
        cursor = next;
    }
    // `x.relu()`: PyTorch's method style, where kiln's ops are functions of their inputs.
    if let Some((TokenTree::Punct(dot), after)) = end.token_tree() {
        if dot.as_char() == '.' {
            if let Some((TokenTree::Ident(method), after)) = after.token_tree() {
                if let Some((TokenTree::Group(args), _)) = after.token_tree() {
                    if let (Delimiter::Parenthesis, Some(receiver)) =
                        (args.delimiter(), let_expression(start, end))
                    {
                        let inner = args.stream().to_string();
                        let written = format!("{receiver}.{method}({inner})");
                        // `F.relu(x)`, `torch.relu(x)`: a module path, not a receiver.
                        if ["F", "torch", "nn", "functional"].contains(&receiver.as_str()) {
                            return Err(syn::Error::new(
                                dot.span(),
                                format!("kiln's ops need no module: write `{method}({inner})` instead of `{written}`"),
                            ));
                        }
                        // PyTorch's `dim` is kiln's `axis` (see `ops::pytorch_name`).
                        let inner = inner.replace("dim =", "axis =");
                        let call = if inner.is_empty() {
                            format!("{method}({receiver})")
                        } else {
                            format!("{method}({receiver}, {inner})")
                        };
                        return Err(syn::Error::new(
                            dot.span(),
                            format!("kiln's ops are functions of their inputs, not methods: write `{call}` instead of `{written}`"),
                        ));
                    }
                }
            }
        }
    }
    // `h[:, -1]`, `h[:, 1:4]`: PyTorch's indexing, which kiln writes as an op.
    if let Some((TokenTree::Group(index), _)) = end.token_tree() {
        if let (Delimiter::Bracket, Some(receiver)) =
            (index.delimiter(), let_expression(start, end))
        {
            return Err(syn::Error::new(
                index.span(),
                indexing_hint(&receiver, &index.stream()),
            ));
        }
    }
    let found = match end.token_tree() {
        Some((TokenTree::Group(g), _)) => match g.delimiter() {
            Delimiter::Parenthesis => "`(`".to_string(),
            Delimiter::Bracket => "`[`".to_string(),
            Delimiter::Brace => "`{`".to_string(),
            Delimiter::None => "a group".to_string(),
        },
        Some((tt, _)) => format!("`{tt}`"),
        None => "the end of the model".to_string(),
    };
    Err(syn::Error::new(
        last.unwrap_or_else(|| input.span()),
        format!("expected `;` at the end of this statement, found {found}"),
    ))
}

/// The message for PyTorch's indexing `receiver[index]`: the `select` or `narrow` call it is,
/// when the index takes one position or a range along one axis (`h[:, -1]`, `h[:, 1:4]`,
/// `h[:, :-1]`), and both ops otherwise.
fn indexing_hint(receiver: &str, index: &proc_macro2::TokenStream) -> String {
    let compact = index.to_string().replace(' ', "");
    let items: Vec<&str> = compact.split(',').collect();
    let written = items.join(", ");
    let general = format!("kiln has no indexing: `{receiver}[{written}]` is written with `select(x, axis = 1, index = -1)` (`x[:, -1]`, the axis dropped) or `narrow(x, axis = 1, start = 1, length = 3)` (`x[:, 1:4]`)");
    let taken: Vec<(usize, &str)> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| **item != ":" && !item.is_empty())
        .map(|(axis, item)| (axis, *item))
        .collect();
    let [(axis, item)] = taken.as_slice() else {
        return general;
    };
    let call = match item.split_once(':') {
        None => match item.parse::<i64>() {
            Ok(i) => format!("select({receiver}, axis = {axis}, index = {i})"),
            Err(_) => return general,
        },
        Some((from, to)) => {
            let from = if from.is_empty() {
                Ok(0)
            } else {
                from.parse::<i64>()
            };
            match (from, to.parse::<i64>()) {
                (Ok(a), Ok(b)) if b > a && (a >= 0) == (b >= 0) => format!(
                    "narrow({receiver}, axis = {axis}, start = {a}, length = {})",
                    b - a
                ),
                // `h[:, :-1]`: up to a number of positions before the end of the axis.
                (Ok(a), Ok(b)) if a >= 0 && b < 0 => {
                    format!("narrow({receiver}, axis = {axis}, start = {a}, end = {b})")
                }
                // `h[:, 1:]`: to the end of the axis.
                (Ok(a), Err(_)) if to.is_empty() => {
                    format!("narrow({receiver}, axis = {axis}, start = {a})")
                }
                _ => return general,
            }
        }
    };
    format!("kiln has no indexing: `{receiver}[{written}]` is `{call}`")
}

/// The expression of a `let` statement from `start` (which holds `let name =`) up to `end`, as
/// written: the receiver of a method call that ends there. `None` for another statement.
fn let_expression(start: Cursor, end: Cursor) -> Option<String> {
    let mut tokens = Vec::new();
    let mut cursor = start;
    while cursor != end {
        let Some((tt, next)) = cursor.token_tree() else {
            break;
        };
        tokens.push(tt);
        cursor = next;
    }
    // `let name = expr`: the expression follows the `=`.
    let eq = tokens
        .iter()
        .position(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == '='))?;
    let expr = &tokens[eq + 1..];
    // As written: a space only between two words (`linear(x, 32)`, not `linear (x, 32)`).
    let mut text = String::new();
    let mut after_word = false;
    for tt in expr {
        let word = matches!(tt, TokenTree::Ident(_) | TokenTree::Literal(_));
        if word && after_word {
            text.push(' ');
        }
        text.push_str(&tt.to_string());
        after_word = word;
    }
    (!text.is_empty()).then_some(text)
}

/// `tokens 5000` or `lengths T` after an input's shape, if present.
fn parse_int_kind(input: ParseStream) -> syn::Result<Option<IntAst>> {
    if !input.peek(Ident) {
        return Ok(None);
    }
    let word: Ident = input.parse()?;
    match word.to_string().as_str() {
        "tokens" => {
            let lit: Lit = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected the vocabulary size, as in `tokens 5000`",
                )
            })?;
            let (vocab, span) = parse_positive_int(&lit, "a vocabulary size")?;
            Ok(Some(IntAst::Tokens(vocab, span)))
        }
        "lengths" => {
            if input.peek(Ident) {
                return Ok(Some(IntAst::Lengths(DimAst::Symbol(input.parse()?))));
            }
            let lit: Lit = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected the longest length, a dim of the sequences, as in `lengths T`",
                )
            })?;
            let (n, span) = parse_positive_int(&lit, "a length")?;
            Ok(Some(IntAst::Lengths(DimAst::Fixed(n, span))))
        }
        "classes" => Err(syn::Error::new(
            word.span(),
            "class labels are a `target`, not an `input`: write `target y: [B] classes 10;` (token ids are `input tokens: [B, T] tokens 5000;`)",
        )),
        other => Err(syn::Error::new(
            word.span(),
            format!("unexpected `{other}`: an input is `input x: [B, 784];`, or for integer inputs `input tokens: [B, T] tokens 5000;` (token ids) or `input len: [B] lengths T;` (sequence lengths)"),
        )),
    }
}

fn parse_shape_annotation(input: ParseStream, name: &Ident) -> syn::Result<Vec<DimAst>> {
    if !input.peek(Token![:]) {
        return Err(input.error(format!(
            "expected `:` and a shape after `{name}`, as in `{name}: [B, 784]`"
        )));
    }
    input.parse::<Token![:]>()?;
    if !input.peek(syn::token::Bracket) {
        return Err(input.error("expected a shape in brackets, as in `[B, 784]`"));
    }
    let content;
    let bracket = bracketed!(content in input);
    let mut dims = Vec::new();
    while !content.is_empty() {
        if content.peek(Ident) {
            let symbol: Ident = content.parse()?;
            if content.peek(Token![*]) {
                return Err(
                    content.error(format!("write the multiple first, as in `16 * {symbol}`"))
                );
            }
            dims.push(symbolic_dim(&content, 1, symbol)?);
        } else if content.peek(Lit) {
            let lit: Lit = content.parse()?;
            let (n, span) = parse_positive_int(&lit, "a dimension")?;
            if content.peek(Token![*]) {
                content.parse::<Token![*]>()?;
                if !content.peek(Ident) {
                    return Err(content.error(format!(
                        "expected a symbolic name after `{n} *`, as in `{n} * H`: the axis is {n} times a size bound at run time"
                    )));
                }
                let symbol = content.parse()?;
                dims.push(symbolic_dim(&content, n, symbol)?);
            } else {
                dims.push(DimAst::Fixed(n, span));
            }
        } else {
            return Err(content.error(
                "a dimension is a positive integer (`784`), a symbolic name (`B`) or a formula of one (`16 * H`, `W - 2`)",
            ));
        }
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    if dims.is_empty() {
        return Err(syn::Error::new(
            bracket.span.join(),
            "an empty shape: inputs have at least one dimension, as in `[B, 4]`",
        ));
    }
    Ok(dims)
}

/// The rest of a symbolic dim after `factor * symbol` (or the symbol alone): an optional
/// `+ n` or `- n`.
fn symbolic_dim(content: ParseStream, factor: usize, symbol: Ident) -> syn::Result<DimAst> {
    let sign = if content.peek(Token![+]) {
        content.parse::<Token![+]>()?;
        1
    } else if content.peek(Token![-]) {
        content.parse::<Token![-]>()?;
        -1
    } else {
        return Ok(if factor == 1 {
            DimAst::Symbol(symbol)
        } else {
            DimAst::Multiple(factor, symbol, 0)
        });
    };
    if !content.peek(Lit) {
        return Err(content.error(format!(
            "expected a number after `{symbol} {}`, as in `{symbol} - 2`",
            if sign > 0 { "+" } else { "-" }
        )));
    }
    let lit: Lit = content.parse()?;
    let (n, span) = parse_positive_int(&lit, "an offset")?;
    let offset =
        i64::try_from(n).map_err(|_| syn::Error::new(span, "an offset this large is no size"))?;
    Ok(DimAst::Multiple(factor, symbol, sign * offset))
}

fn parse_positive_int(lit: &Lit, what: &str) -> syn::Result<(usize, Span)> {
    let span = lit.span();
    match lit {
        Lit::Int(int) => match int.base10_parse::<usize>() {
            Ok(0) => Err(syn::Error::new(
                span,
                format!("{what} must be positive, not 0"),
            )),
            Ok(n) => Ok((n, span)),
            Err(_) => Err(syn::Error::new(
                span,
                format!("{what} must be a positive integer"),
            )),
        },
        Lit::Float(f) => Err(syn::Error::new(
            span,
            format!(
                "{what} must be a positive integer, not `{}`",
                f.base10_digits()
            ),
        )),
        _ => Err(syn::Error::new(
            span,
            format!("{what} must be a positive integer or a symbolic name like `B`"),
        )),
    }
}

/// expr := term (('+' | '-') term)*
pub(crate) fn parse_expr(input: ParseStream) -> syn::Result<Expr> {
    let mut lhs = parse_term(input)?;
    loop {
        let op = if input.peek(Token![+]) {
            BinOp::Add
        } else if input.peek(Token![-]) && !input.peek(Token![->]) {
            BinOp::Sub
        } else {
            return Ok(lhs);
        };
        let op_span = input.span();
        if op == BinOp::Add {
            input.parse::<Token![+]>()?;
        } else {
            input.parse::<Token![-]>()?;
        }
        let rhs = parse_term(input)?;
        lhs = Expr::Binary {
            op,
            op_span,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        };
    }
}

/// term := unary (('*' | '/') unary)*
fn parse_term(input: ParseStream) -> syn::Result<Expr> {
    let mut lhs = parse_unary(input)?;
    loop {
        let op = if input.peek(Token![*]) {
            BinOp::Mul
        } else if input.peek(Token![/]) {
            BinOp::Div
        } else {
            return Ok(lhs);
        };
        let op_span = input.span();
        if op == BinOp::Mul {
            input.parse::<Token![*]>()?;
        } else {
            input.parse::<Token![/]>()?;
        }
        let rhs = parse_unary(input)?;
        lhs = Expr::Binary {
            op,
            op_span,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        };
    }
}

/// unary := '-' unary | primary
fn parse_unary(input: ParseStream) -> syn::Result<Expr> {
    if input.peek(Token![-]) {
        let span = input.span();
        input.parse::<Token![-]>()?;
        let expr = parse_unary(input)?;
        return Ok(match expr {
            // Fold `-0.5` into a literal so that options like `slope = -0.1` stay literals.
            Expr::Float(v, s) => Expr::Float(-v, crate::ast::join(span, s)),
            Expr::Int(v, s) => Expr::Float(-(v as f64), crate::ast::join(span, s)),
            other => Expr::Neg {
                span,
                expr: Box::new(other),
            },
        });
    }
    parse_primary(input)
}

/// primary := literal | name | name '(' args ')' | '(' expr ')' | '(' expr ',' ... ')'
fn parse_primary(input: ParseStream) -> syn::Result<Expr> {
    if input.peek(syn::token::Paren) {
        let content;
        let paren = parenthesized!(content in input);
        let first = parse_expr(&content)?;
        if content.is_empty() {
            return Ok(first);
        }
        let mut items = vec![first];
        while content.peek(Token![,]) {
            content.parse::<Token![,]>()?;
            if content.is_empty() {
                break;
            }
            items.push(parse_expr(&content)?);
        }
        if !content.is_empty() {
            return Err(content.error("expected `,` or `)`"));
        }
        return Ok(Expr::Tuple(items, paren.span.join()));
    }
    if input.peek(Lit) {
        let lit: Lit = input.parse()?;
        return match &lit {
            Lit::Int(i) => i
                .base10_parse::<u64>()
                .map(|v| Expr::Int(v, lit.span()))
                .map_err(|_| syn::Error::new(lit.span(), "integer literal out of range")),
            // `1e400` parses to infinity; reject it as rustc does (`overflowing_literals`).
            Lit::Float(f) => match f.base10_parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Expr::Float(v, lit.span())),
                _ => Err(syn::Error::new(
                    lit.span(),
                    format!("float literal `{f}` is out of range for `f64`"),
                )),
            },
            Lit::Bool(b) => Ok(Expr::Bool(b.value, lit.span())),
            // A choice written as Python writes it (`reduction="batchmean"`, `mode="bilinear"`):
            // kiln takes the bare name.
            Lit::Str(s) if syn::parse_str::<Ident>(&s.value()).is_ok() => Err(syn::Error::new(
                lit.span(),
                format!(
                    "strings are not values in a model: an option that names a choice takes the bare name, as in `{0}` for PyTorch's `\"{0}\"`",
                    s.value()
                ),
            )),
            _ => Err(syn::Error::new(
                lit.span(),
                "expected a number, a name or an op call (strings are not values in a model)",
            )),
        };
    }
    if input.peek(Ident) {
        let name: Ident = input.parse()?;
        if !input.peek(syn::token::Paren) {
            return Ok(Expr::Var(name));
        }
        let content;
        let paren = parenthesized!(content in input);
        let mut args = Vec::new();
        let mut options: Vec<(Ident, Expr)> = Vec::new();
        while !content.is_empty() {
            if content.peek(Ident) && content.peek2(Token![=]) && !content.peek2(Token![==]) {
                let key: Ident = content.parse()?;
                content.parse::<Token![=]>()?;
                options.push((key, parse_expr(&content)?));
            } else {
                if let Some((key, _)) = options.last() {
                    return Err(content.error(format!(
                        "positional arguments go before options (after `{key} = ...`)"
                    )));
                }
                args.push(parse_expr(&content)?);
            }
            if content.is_empty() {
                break;
            }
            if !content.peek(Token![,]) {
                return Err(content.error("expected `,` or `)` in the argument list"));
            }
            content.parse::<Token![,]>()?;
        }
        let span = crate::ast::join(name.span(), paren.span.close());
        return Ok(Expr::Call(Call {
            func: name,
            args,
            options,
            span,
        }));
    }
    Err(input
        .error("expected an expression: a name, a number, an op call like `relu(x)`, or `(...)`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn parses_the_design_example() {
        let def: ModelDef = syn::parse2(quote! {
            /// An MLP.
            pub struct Mlp {
                input x: [B, 784];
                target y: [B] classes 10;
                let h1 = relu(linear(x, 128));
                let logits = linear(h1, 10, bias = false);
                output logits;
                loss cross_entropy(logits, y);
            }
        })
        .expect("parses");
        assert_eq!(def.name, "Mlp");
        assert_eq!(def.stmts.len(), 6);
        assert!(matches!(
            &def.stmts[1],
            Stmt::Target {
                classes: Some((10, _)),
                ..
            }
        ));
        match &def.stmts[3] {
            Stmt::Let {
                expr: Expr::Call(call),
                ..
            } => {
                assert_eq!(call.func, "linear");
                assert_eq!(call.args.len(), 2);
                assert_eq!(call.options.len(), 1);
            }
            _ => panic!("expected a let with a call"),
        }
    }

    #[test]
    fn precedence_is_arithmetic() {
        let e: Expr =
            syn::parse::Parser::parse2(parse_expr, quote!(a + b * -c - d / 2.0)).expect("parses");
        // ((a + (b * (-c))) - (d / 2.0))
        match e {
            Expr::Binary {
                op: BinOp::Sub,
                lhs,
                rhs,
                ..
            } => {
                assert!(matches!(*lhs, Expr::Binary { op: BinOp::Add, .. }));
                assert!(matches!(*rhs, Expr::Binary { op: BinOp::Div, .. }));
            }
            _ => panic!("wrong tree"),
        }
    }

    #[test]
    fn non_integer_dim_is_an_error() {
        let err = syn::parse2::<ModelDef>(quote!(struct M { input x: [B, 7.5]; }))
            .err()
            .expect("rejected");
        assert!(
            err.to_string().contains("positive integer, not `7.5`"),
            "{err}"
        );
    }
}
