//! The canonical text of a filter: it parses back to an equal filter.

use std::fmt::{self, Write as _};

use super::ast::{Node, Op, name_of};

/// Whether `s` can be written as a bare word (no quoting needed).
fn bare(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| matches!(c, '(' | ')' | '~' | '\'' | '"' | ' ' | '\n' | '\t' | '\r'))
}

/// Writes a regex argument, quoted when it has to be.
pub(super) fn write_regex(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if bare(s) {
        return f.write_str(s);
    }
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '"' => f.write_str("\\\"")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            // A raw tab would be expanded to spaces when parsed again.
            '\t' => f.write_str("\\t")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Whether the text of `n` ends with an operator without argument (`~q`): such an
/// operator must be followed by a space, so `(~q )` and not `(~q)`.
fn ends_with_flag(n: &Node) -> bool {
    match n {
        Node::Flag(_) => true,
        Node::Not(inner) => ends_with_flag(inner),
        Node::And(items) | Node::Or(items) => items.last().is_some_and(ends_with_flag),
        Node::Rex(..) | Node::Code(_) => false,
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, n: &Node) -> fmt::Result {
    match n {
        Node::And(_) | Node::Or(_) => {
            f.write_char('(')?;
            write_node(f, n)?;
            f.write_str(if ends_with_flag(n) { " )" } else { ")" })
        }
        _ => write_node(f, n),
    }
}

/// Writes `n`: `&`/`|` chains with nested chains in parentheses, `!` before its operand.
pub(super) fn write_node(f: &mut fmt::Formatter<'_>, n: &Node) -> fmt::Result {
    match n {
        Node::Not(inner) => {
            f.write_char('!')?;
            write_operand(f, inner)
        }
        Node::And(items) | Node::Or(items) => {
            let sep = if matches!(n, Node::And(_)) {
                " & "
            } else {
                " | "
            };
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write_operand(f, item)?;
            }
            Ok(())
        }
        Node::Flag(op) => write!(f, "~{}", name_of(Op::Flag(*op))),
        Node::Rex(op, rex) => {
            write!(f, "~{} ", name_of(Op::Rex(*op)))?;
            write_regex(f, &rex.source)
        }
        Node::Code(c) => write!(f, "~c {c}"),
    }
}
