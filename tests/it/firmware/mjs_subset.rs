//! The mJS-safe subset check: a small tokenizer and the rules the script header
//! claims, tried on the script and on a snippet of each forbidden feature.

use super::engine::DEADMAN;

//
// What the script must avoid so it runs on 0.x firmware (mJS) as well as on >= 1.0
// (modified Espruino). Sources: Shelly's 0.14 language page ("Only let", "Only === and
// !==", "Closures are not supported", "A semicolon is required after every statement"),
// the current Language Reference (no hoisting, no classes, no promises/async), and the
// mJS README's restrictions (no exceptions, no `new`, no for..of, =>, getters/setters,
// template strings, destructuring, generators). try/catch is supported by the newer
// interpreter but not by mJS, so it is out; so is JSON.parse, which throws on bad input
// and cannot be caught there.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num,
    Str,
    Punct(&'static str),
    Template,
    Regex,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

const PUNCTS: [&str; 52] = [
    ">>>=", "...", "===", "!==", "**=", "<<=", ">>=", ">>>", "=>", "==", "!=", "<=", ">=", "&&",
    "||", "??", "?.", "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "**", "<<", ">>",
    "{", "}", "(", ")", "[", "]", ";", ",", "<", ">", "+", "-", "*", "/", "%", "&", "|", "^", "!",
    "~", "?", ":",
];
const PUNCT_EQ: &str = "=";
const PUNCT_DOT: &str = ".";

/// Ends an expression: a `/` after it divides, a line break after it needs a `;`.
fn ends_expression(t: &Tok) -> bool {
    match t {
        Tok::Ident(w) => !is_keyword(w) || matches!(w.as_str(), "true" | "false" | "null" | "this"),
        Tok::Num | Tok::Str | Tok::Template | Tok::Regex => true,
        Tok::Punct(p) => matches!(*p, ")" | "]"),
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "break"
            | "case"
            | "catch"
            | "class"
            | "const"
            | "continue"
            | "debugger"
            | "default"
            | "delete"
            | "do"
            | "else"
            | "export"
            | "extends"
            | "finally"
            | "for"
            | "function"
            | "if"
            | "import"
            | "in"
            | "instanceof"
            | "let"
            | "new"
            | "return"
            | "super"
            | "switch"
            | "this"
            | "throw"
            | "try"
            | "typeof"
            | "var"
            | "void"
            | "while"
            | "with"
            | "yield"
            | "true"
            | "false"
            | "null"
            | "async"
            | "await"
    )
}

fn tokenize(src: &str) -> Result<Vec<Token>, String> {
    let b = src.as_bytes();
    let mut out: Vec<Token> = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if src[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if src[i..].starts_with("/*") {
            let end = src[i + 2..]
                .find("*/")
                .ok_or(format!("line {line}: unterminated comment"))?;
            line += src[i..i + 2 + end].matches('\n').count();
            i += end + 4;
        } else if c == b'"' || c == b'\'' || c == b'`' {
            let start_line = line;
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == b'\n' {
                    if c != b'`' {
                        return Err(format!("line {start_line}: unterminated string"));
                    }
                    line += 1;
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(format!("line {start_line}: unterminated string"));
            }
            i += 1;
            let tok = if c == b'`' { Tok::Template } else { Tok::Str };
            out.push(Token {
                tok,
                line: start_line,
            });
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Num,
                line,
            });
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(src[start..i].to_owned()),
                line,
            });
        } else if c == b'/' && !out.last().is_some_and(|t| ends_expression(&t.tok)) {
            // A regular expression literal.
            i += 1;
            let mut class = false;
            while i < b.len() && (class || b[i] != b'/') {
                match b[i] {
                    b'\\' => i += 1,
                    b'[' => class = true,
                    b']' => class = false,
                    b'\n' => return Err(format!("line {line}: unterminated regex")),
                    _ => {}
                }
                i += 1;
            }
            i += 1;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Regex,
                line,
            });
        } else if let Some(p) = PUNCTS.iter().find(|p| src[i..].starts_with(**p)) {
            i += p.len();
            out.push(Token {
                tok: Tok::Punct(p),
                line,
            });
        } else if c == b'=' {
            i += 1;
            out.push(Token {
                tok: Tok::Punct(PUNCT_EQ),
                line,
            });
        } else if c == b'.' {
            i += 1;
            out.push(Token {
                tok: Tok::Punct(PUNCT_DOT),
                line,
            });
        } else {
            return Err(format!("line {line}: unexpected character {:?}", c as char));
        }
    }
    Ok(out)
}

fn is_ident(t: Option<&Token>, w: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Ident(x), .. }) if x == w)
}

fn is_punct(t: Option<&Token>, p: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(x), .. }) if *x == p)
}

fn ident_of(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token {
            tok: Tok::Ident(x), ..
        }) if !is_keyword(x) => Some(x),
        _ => None,
    }
}

/// Every place `src` leaves the mJS-safe subset, as "line N: what".
fn mjs_violations(src: &str) -> Vec<String> {
    let toks = match tokenize(src) {
        Ok(t) => t,
        Err(e) => return vec![e],
    };
    let mut v = Vec::new();
    let mut bad = |line: usize, what: &str| v.push(format!("line {line}: {what}"));

    // Single tokens and short patterns.
    for (i, t) in toks.iter().enumerate() {
        let (prev, next) = (i.checked_sub(1).map(|p| &toks[p]), toks.get(i + 1));
        match &t.tok {
            Tok::Template => bad(t.line, "template literal"),
            Tok::Regex => bad(t.line, "regular expression literal"),
            Tok::Punct(p) => match *p {
                "=>" => bad(t.line, "arrow function"),
                "..." => bad(t.line, "spread or rest (...)"),
                "==" => bad(t.line, "loose equality == (only === and !==)"),
                "!=" => bad(t.line, "loose inequality != (only === and !==)"),
                "**" | "**=" => bad(t.line, "exponent operator **"),
                "??" => bad(t.line, "nullish coalescing ??"),
                "?." => bad(t.line, "optional chaining ?."),
                _ => {}
            },
            Tok::Ident(w) => {
                let after_dot = is_punct(prev, PUNCT_DOT);
                match w.as_str() {
                    _ if after_dot => {}
                    "class" | "extends" | "super" => bad(t.line, &format!("`{w}` (no classes)")),
                    "const" => bad(t.line, "`const` (only let)"),
                    "var" => bad(t.line, "`var` (only let)"),
                    "async" | "await" => bad(t.line, &format!("`{w}` (no async)")),
                    "yield" => bad(t.line, "`yield` (no generators)"),
                    "try" | "catch" | "finally" | "throw" => {
                        bad(t.line, &format!("`{w}` (no exceptions in mJS)"))
                    }
                    "new" => bad(t.line, "`new` (not in mJS)"),
                    "this" => bad(t.line, "`this` (no prototypes in mJS)"),
                    "delete" | "with" | "import" | "export" | "debugger" | "instanceof" => {
                        bad(t.line, &format!("`{w}`"))
                    }
                    "of" if toks[..i]
                        .iter()
                        .rev()
                        .take(4)
                        .any(|p| is_ident(Some(p), "for")) =>
                    {
                        bad(t.line, "for..of")
                    }
                    "get" | "set"
                        if (is_punct(prev, "{") || is_punct(prev, ","))
                            && ident_of(next).is_some()
                            && is_punct(toks.get(i + 2), "(") =>
                    {
                        bad(t.line, if w == "get" { "getter" } else { "setter" })
                    }
                    "let" if is_punct(next, "{") || is_punct(next, "[") => {
                        bad(t.line, "destructuring")
                    }
                    "JSON" if is_punct(next, PUNCT_DOT) && is_ident(toks.get(i + 2), "parse") => {
                        bad(
                            t.line,
                            "JSON.parse (throws on bad input, uncatchable in mJS)",
                        )
                    }
                    "Promise" | "Date" | "setTimeout" | "setInterval" | "console" | "eval" => {
                        bad(t.line, &format!("`{w}` (not in mJS)"))
                    }
                    _ => {}
                }
            }
            Tok::Num | Tok::Str => {}
        }
    }

    // Functions: named declarations at the top level only (no closures, no function
    // expressions, no generators, no default parameters), each defined before the
    // top-level code that names it (no hoisting).
    let mut depth = 0usize;
    let mut declared: Vec<(String, usize)> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if is_ident(Some(t), "function") {
            let prev = i.checked_sub(1).map(|p| &toks[p]);
            let statement_start = prev.is_none() || is_punct(prev, ";") || is_punct(prev, "}");
            if is_punct(toks.get(i + 1), "*") {
                bad(t.line, "generator function");
            } else if depth > 0 {
                bad(t.line, "nested function (closures are not supported)");
            } else if !statement_start || ident_of(toks.get(i + 1)).is_none() {
                bad(
                    t.line,
                    "function expression (only top-level named functions)",
                );
            } else if let Some(name) = ident_of(toks.get(i + 1)) {
                declared.push((name.to_owned(), i));
                let mut j = i + 3;
                while j < toks.len() && !is_punct(toks.get(j), ")") {
                    if is_punct(toks.get(j), PUNCT_EQ) {
                        bad(toks[j].line, "default parameter");
                    }
                    j += 1;
                }
            }
        }
        if is_punct(Some(t), "{") {
            depth += 1;
        } else if is_punct(Some(t), "}") {
            depth = depth.saturating_sub(1);
        }
    }
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        if is_punct(Some(t), "{") {
            depth += 1;
        } else if is_punct(Some(t), "}") {
            depth = depth.saturating_sub(1);
        }
        if depth > 0 || is_ident(i.checked_sub(1).map(|p| &toks[p]), "function") {
            continue;
        }
        if let Some(name) = ident_of(Some(t))
            && declared.iter().any(|(d, at)| d == name && *at > i)
        {
            bad(
                t.line,
                &format!("`{name}` used before its definition (no hoisting)"),
            );
        }
    }

    // Semicolons: after every statement. A statement's last token followed by a line
    // break, or by the `}` of a block, needs one (object literals need none).
    let mut stack: Vec<bool> = Vec::new(); // true: object literal
    let mut parens = 0usize;
    for (i, t) in toks.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &toks[p]);
        match &t.tok {
            Tok::Punct("{") => {
                let object = prev.is_some_and(|p| {
                    matches!(
                        &p.tok,
                        Tok::Punct("=" | "(" | "," | ":" | "[" | "?" | "||" | "&&")
                    ) || is_ident(Some(p), "return")
                });
                stack.push(object);
            }
            Tok::Punct("}") => {
                stack.pop();
            }
            Tok::Punct("(" | "[") => parens += 1,
            Tok::Punct(")" | "]") => parens = parens.saturating_sub(1),
            _ => {}
        }
        let statement_end = ends_expression(&t.tok)
            || matches!(&t.tok, Tok::Punct("++" | "--"))
            || ["return", "break", "continue"]
                .iter()
                .any(|w| is_ident(Some(t), w));
        if parens > 0 || !statement_end {
            continue;
        }
        let in_object = stack.last().copied().unwrap_or(false);
        let next = toks.get(i + 1);
        let missing = match next {
            None => true,
            Some(n) if is_punct(Some(n), "}") => !in_object,
            Some(n) if n.line > t.line => {
                !in_object
                    && (matches!(&n.tok, Tok::Ident(_) | Tok::Num | Tok::Str)
                        || is_punct(Some(n), "(")
                        || is_punct(Some(n), "["))
            }
            Some(_) => false,
        };
        if missing {
            bad(t.line, "missing semicolon (required after every statement)");
        }
    }
    v
}

#[test]
fn deadman_script_stays_within_the_mjs_safe_subset() {
    let v = mjs_violations(DEADMAN);
    assert!(
        v.is_empty(),
        "deadman.js leaves the mJS subset:\n{}",
        v.join("\n")
    );
}

#[test]
fn mjs_checker_accepts_the_subset() {
    let ok = r#"
let a = 1;
let o = {id: 0, on: false, name: "x"};
function f(x, y) {
  if (x === y && x !== 2) {
    return x / 2;
  } else {
    while (x < 3) {
      x = x + 1;
    }
  }
  let s = "a\"b" + 'c';
  return s.slice(0, 1).charCodeAt(0) + o.id;
}
function g(r, code, msg) {
  print(typeof r, f(1, 2));
}
Shelly.call("Switch.Set", {id: 0, on: true}, g);
Timer.set(1000, true, g);
let q = a > 1 ? {x: 1} : null;
"#;
    let v = mjs_violations(ok);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn mjs_checker_rejects_each_forbidden_feature() {
    let cases = [
        ("class A {}", "class"),
        ("let f = 1;\nlet g = (a) => a;", "arrow"),
        ("let s = `x${f}`;", "template"),
        ("const a = 1;", "const"),
        ("var a = 1;", "var"),
        ("async function f() {}", "async"),
        ("function f() { await g(); }", "await"),
        ("try { f(); } catch (e) { print(e); }", "exceptions"),
        ("throw 1;", "exceptions"),
        ("let r = /ab+c/g;", "regular expression"),
        ("let x = a.b(/x/);", "regular expression"),
        ("let o = { get x() { return 1; } };", "getter"),
        ("let o = { a: 1, set x(v) { print(v); } };", "setter"),
        ("let a = [...b];", "spread"),
        ("function f(...r) { print(r); }", "spread"),
        ("if (a == b) { f(); }", "=="),
        ("if (a != b) { f(); }", "!="),
        ("let a = 2 ** 3;", "**"),
        ("let a = b ?? c;", "??"),
        ("let a = b?.c;", "?."),
        (
            "function f() { function g() { print(1); } g(); }",
            "nested function",
        ),
        ("let f = function () { print(1); };", "function expression"),
        (
            "Timer.set(1000, false, function () { print(1); });",
            "function expression",
        ),
        ("function* g() { print(1); }", "generator"),
        ("function f(a = 1) { print(a); }", "default parameter"),
        ("let o = new Foo();", "new"),
        ("let a = this.x;", "this"),
        ("for (let x of xs) { f(x); }", "for..of"),
        ("let {a, b} = o;", "destructuring"),
        ("let [a, b] = o;", "destructuring"),
        ("let x = JSON.parse(s);", "JSON.parse"),
        ("let d = Date.now();", "Date"),
        ("f();\nfunction f() { print(1); }", "before its definition"),
        (
            "Timer.set(5, true, tick);\nfunction tick() { print(1); }",
            "before its definition",
        ),
        ("let a = 1\nlet b = 2;", "semicolon"),
        ("function f() { return 1 }", "semicolon"),
        ("print(1)", "semicolon"),
    ];
    for (src, want) in cases {
        let v = mjs_violations(src);
        assert!(
            v.iter().any(|e| e.contains(want)),
            "{src:?} should be rejected for {want:?}, got {v:?}"
        );
    }
}
