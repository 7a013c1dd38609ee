//! The filter grammar, as mitmproxy 12 parses it.
//!
//! mitmproxy builds its parser with pyparsing; these are the rules that grammar amounts
//! to, written out by hand:
//!
//! - The text has its tabs expanded (to the next multiple of 8 columns) before anything
//!   else; spaces, tabs, `\n` and `\r` separate tokens.
//! - An operator is `~` followed by its name, and the name must end the run of printable
//!   ASCII characters (`~q&` and `~d(x)` are errors; `(~q)` too).
//! - An argument, and a bare regex (meaning `~u`), is either a run of characters other than
//!   `( ) ~ ' "` and whitespace, or a string quoted with `"` or `'` (a backslash escapes
//!   the next character; `\t \n \f \r \0 \ooo \xhh \uhhhh` are converted).
//! - `!` binds tightest, then `&`, then `|`, all within one expression; parentheses group.
//!   Expressions written one after another are joined with "and" at the top level only,
//!   binding loosest (`a | b c` is `(a | b) & c`; `(a b)` is an error).
//! - In operand position `!` is always "not"; `&` and `|` there start a bare regex.

use super::FilterError;
use super::ast::{Node, OPERATORS, Op, Rex, name_of};

/// The parser's view of the text: characters with the byte offset each came from.
struct Input {
    chars: Vec<(usize, char)>,
    len: usize,
}

impl Input {
    fn new(text: &str) -> Self {
        // pyparsing expands tabs before parsing (`str.expandtabs()`).
        let mut chars = Vec::with_capacity(text.len());
        let mut column = 0usize;
        for (i, c) in text.char_indices() {
            match c {
                '\t' => {
                    let n = 8 - column % 8;
                    chars.extend(std::iter::repeat_n((i, ' '), n));
                    column += n;
                }
                '\n' | '\r' => {
                    chars.push((i, c));
                    column = 0;
                }
                _ => {
                    chars.push((i, c));
                    column += 1;
                }
            }
        }
        Self {
            chars,
            len: text.len(),
        }
    }

    fn get(&self, pos: usize) -> Option<char> {
        self.chars.get(pos).map(|&(_, c)| c)
    }

    /// The byte offset of character `pos` in the original text.
    fn offset(&self, pos: usize) -> usize {
        self.chars.get(pos).map_or(self.len, |&(i, _)| i)
    }

    fn skip_ws(&self, mut pos: usize) -> usize {
        while matches!(self.get(pos), Some(' ' | '\n' | '\r' | '\t')) {
            pos += 1;
        }
        pos
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> FilterError {
        FilterError::new(self.offset(pos), msg)
    }
}

/// Characters that end a bare word (besides the end of the text).
fn ends_word(c: char) -> bool {
    matches!(c, '(' | ')' | '~' | '\'' | '"' | ' ' | '\n' | '\t' | '\r')
}

fn printable_ascii(c: char) -> bool {
    ('!'..='~').contains(&c)
}

/// Parses a whole filter expression.
pub(super) fn parse(text: &str) -> Result<Node, FilterError> {
    let input = Input::new(text);
    if text.is_empty() {
        return Err(FilterError::new(0, "empty filter expression"));
    }
    let mut parts = Vec::new();
    let mut pos = input.skip_ws(0);
    loop {
        let (node, next) = expression(&input, pos)?;
        parts.push(node);
        pos = input.skip_ws(next);
        if pos >= input.chars.len() {
            break;
        }
    }
    Ok(if parts.len() == 1 {
        parts.pop().unwrap_or(Node::And(Vec::new()))
    } else {
        Node::And(parts)
    })
}

/// How many operators may wait for their operands at once (bounds the depth of the tree).
const MAX_NESTING: usize = 200;

enum Pending {
    Not,
    /// `&` (prec 20) or `|` (prec 10) with the number of operators seen at this level.
    Infix {
        prec: u8,
        count: usize,
    },
    Paren,
}

fn apply(op: Pending, operands: &mut Vec<Node>) {
    match op {
        Pending::Not => {
            if let Some(n) = operands.pop() {
                operands.push(Node::Not(Box::new(n)));
            }
        }
        Pending::Infix { prec, count } => {
            let at = operands.len().saturating_sub(count + 1);
            let args = operands.split_off(at);
            operands.push(if prec == 20 {
                Node::And(args)
            } else {
                Node::Or(args)
            });
        }
        Pending::Paren => {}
    }
}

fn reduce(ops: &mut Vec<Pending>, operands: &mut Vec<Node>, min_prec: i8) {
    while let Some(top) = ops.last() {
        let prec = match top {
            Pending::Paren => break,
            Pending::Not => 30,
            Pending::Infix { prec, .. } => *prec as i8,
        };
        if prec <= min_prec {
            break;
        }
        if let Some(op) = ops.pop() {
            apply(op, operands);
        }
    }
}

/// One expression of `!`, `&`, `|` and parentheses (operator precedence, as pyparsing's
/// `infix_notation`): returns the tree and the position after it.
fn expression(input: &Input, mut pos: usize) -> Result<(Node, usize), FilterError> {
    let mut operands: Vec<Node> = Vec::new();
    let mut ops: Vec<Pending> = Vec::new();
    let mut depth = 0usize;
    let mut expect_operand = true;
    loop {
        pos = input.skip_ws(pos);
        if ops.len() > MAX_NESTING {
            // The tree is walked recursively (matching, printing, dropping): bound its depth.
            return Err(input.err(pos, "expression nested too deeply"));
        }
        if expect_operand {
            match input.get(pos) {
                Some('!') => {
                    ops.push(Pending::Not);
                    pos += 1;
                }
                Some('(') => {
                    ops.push(Pending::Paren);
                    depth += 1;
                    pos += 1;
                }
                Some(_) => {
                    let (node, next) = atom(input, pos)?;
                    operands.push(node);
                    pos = next;
                    expect_operand = false;
                }
                None => {
                    return Err(input.err(
                        pos,
                        match ops.last() {
                            Some(Pending::Not) => "expected an expression after !",
                            Some(Pending::Infix { prec: 20, .. }) => {
                                "expected an expression after &"
                            }
                            Some(Pending::Infix { .. }) => "expected an expression after |",
                            _ => "expected an expression",
                        },
                    ));
                }
            }
            continue;
        }
        match input.get(pos) {
            Some(')') if depth > 0 => {
                reduce(&mut ops, &mut operands, -1);
                if let Some(Pending::Paren) = ops.last() {
                    ops.pop();
                }
                depth -= 1;
                pos += 1;
            }
            Some(c @ ('&' | '|')) => {
                let prec = if c == '&' { 20 } else { 10 };
                reduce(&mut ops, &mut operands, prec as i8);
                match ops.last_mut() {
                    Some(Pending::Infix { prec: p, count }) if *p == prec => *count += 1,
                    _ => ops.push(Pending::Infix { prec, count: 1 }),
                }
                pos += 1;
                expect_operand = true;
            }
            _ => break,
        }
    }
    reduce(&mut ops, &mut operands, -1);
    if depth > 0 {
        return Err(match input.get(pos) {
            None => input.err(pos, "expected ')'"),
            Some(c) => input.err(pos, format!("expected ')' or an operator, found {c:?}")),
        });
    }
    match (operands.pop(), operands.is_empty(), ops.is_empty()) {
        (Some(node), true, true) => Ok((node, pos)),
        _ => Err(input.err(pos, "incomplete expression")),
    }
}

/// An operator with its argument, or a bare regex.
fn atom(input: &Input, pos: usize) -> Result<(Node, usize), FilterError> {
    let Some(first) = input.get(pos) else {
        return Err(input.err(pos, "expected an expression"));
    };
    if first == '~' {
        let mut end = pos + 1;
        while input.get(end).is_some_and(printable_ascii) {
            end += 1;
        }
        let name: String = (pos + 1..end).filter_map(|i| input.get(i)).collect();
        let Some(&(_, op)) = OPERATORS.iter().find(|(n, _)| *n == name) else {
            // `~q)` or `~d(x)`: an operator must be followed by a space or the end.
            let known = OPERATORS
                .iter()
                .filter(|(n, _)| name.starts_with(n))
                .max_by_key(|(n, _)| n.len());
            return Err(match known {
                Some((n, _)) => input.err(
                    pos + 1 + n.chars().count(),
                    format!("expected a space after ~{n}"),
                ),
                None => input.err(pos, format!("unknown operator ~{name}")),
            });
        };
        return match op {
            Op::Flag(f) => Ok((Node::Flag(f), end)),
            Op::Code => {
                let start = input.skip_ws(end);
                let mut i = start;
                while input.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                if i == start {
                    return Err(input.err(start, "expected a number after ~c"));
                }
                let value = (start..i)
                    .filter_map(|j| input.get(j).and_then(|c| c.to_digit(10)))
                    .fold(0u32, |acc, d| acc.saturating_mul(10).saturating_add(d));
                Ok((Node::Code(value), i))
            }
            Op::Rex(r) => {
                let at = input.skip_ws(end);
                let Some((text, next)) = regex_arg(input, end)? else {
                    return Err(input.err(at, format!("expected a regex after ~{}", name_of(op))));
                };
                let rex = Rex::compile(r, text).map_err(|e| {
                    input.err(at, format!("invalid regex for ~{}: {e}", name_of(op)))
                })?;
                Ok((Node::Rex(r, rex), next))
            }
        };
    }
    match regex_arg(input, pos)? {
        Some((text, next)) => {
            let rex = Rex::compile(super::ast::RexOp::Url, text)
                .map_err(|e| input.err(pos, format!("invalid regex: {e}")))?;
            Ok((Node::Rex(super::ast::RexOp::Url, rex), next))
        }
        None => Err(input.err(pos, format!("unexpected {first:?}"))),
    }
}

/// A regex argument (bare word or quoted string) after whitespace at `pos`; `None` when
/// there is none.
fn regex_arg(input: &Input, pos: usize) -> Result<Option<(String, usize)>, FilterError> {
    let pos = input.skip_ws(pos);
    match input.get(pos) {
        None => Ok(None),
        Some(q @ ('"' | '\'')) => quoted(input, pos, q).map(Some),
        Some(c) if ends_word(c) => Ok(None),
        Some(_) => {
            let mut end = pos;
            let mut word = String::new();
            while let Some(c) = input.get(end).filter(|&c| !ends_word(c)) {
                word.push(c);
                end += 1;
            }
            Ok(Some((word, end)))
        }
    }
}

/// A quoted string starting at `pos` (the quote), unescaped as pyparsing's `QuotedString`.
fn quoted(input: &Input, pos: usize, q: char) -> Result<(String, usize), FilterError> {
    // First find the closing quote: backslash-anything (but a newline) or any character but
    // the quote, a backslash, `\n` or `\r`.
    let mut end = pos + 1;
    loop {
        match input.get(end) {
            Some('\\') if input.get(end + 1).is_some_and(|c| c != '\n') => end += 2,
            Some(c) if c == q => break,
            Some(c) if !matches!(c, '\\' | '\n' | '\r') => end += 1,
            _ => return Err(input.err(pos, "unterminated quoted string")),
        }
    }
    let raw: Vec<char> = (pos + 1..end).filter_map(|i| input.get(i)).collect();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let n = raw.get(i + 1).copied().unwrap_or('\\');
        let at = |k: usize| raw.get(i + k).copied();
        let hex = |c: Option<char>| c.filter(char::is_ascii_hexdigit);
        // pyparsing 3.3's numeric escapes are `\\[0-7]3`, `\\0`, `\\x<hex>2` and
        // `\\u<hex>4` (its pattern lost the `{n}` counts to f-string formatting); the two
        // last ones become the character of that two-digit hex number.
        let (value, used) = match n {
            't' => ('\t', 2),
            'n' => ('\n', 2),
            'f' => ('\x0c', 2),
            'r' => ('\r', 2),
            _ if ('0'..='7').contains(&n) && at(2) == Some('3') => {
                out.push(n);
                ('3', 3)
            }
            '0' => ('\0', 2),
            'x' | 'u'
                if hex(at(2)).is_some() && at(3) == Some(if n == 'x' { '2' } else { '4' }) =>
            {
                let hi = hex(at(2)).and_then(|c| c.to_digit(16)).unwrap_or(0);
                let lo = if n == 'x' { 2 } else { 4 };
                (char::from_u32(hi * 16 + lo).unwrap_or('?'), 4)
            }
            _ => (n, 2),
        };
        out.push(value);
        i += used;
    }
    Ok((out, end + 1))
}
