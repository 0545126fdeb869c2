//! CloudEvents SQL (CESQL) v1.0: a parser and a fail-fast evaluator for CESQL expressions over
//! Switchyard's [`Event`].
//!
//! ```
//! use switchyard_cesql::{parse, Value};
//! use switchyard_event::{AttrValue, Event};
//!
//! let event = Event::new(
//!     vec![
//!         ("specversion".into(), AttrValue::String("1.0".into())),
//!         ("id".into(), AttrValue::String("1".into())),
//!         ("source".into(), AttrValue::String("/orders/42".into())),
//!         ("type".into(), AttrValue::String("com.example.order.created".into())),
//!     ],
//!     None,
//! )
//! .unwrap();
//! let filter = parse("type = 'com.example.order.created' AND source LIKE '/orders/%'").unwrap();
//! assert!(filter.matches(&event));
//! assert_eq!(parse("LENGTH(source)").unwrap().evaluate(&event), Ok(Value::Integer(10)));
//! ```
//!
//! Parsing compiles the text once into a tree ([`Expression`]); evaluation walks it, borrowing
//! strings from the event and from the expression, so the common filter shapes (attribute
//! comparisons with literals, `LIKE`, `EXISTS`, `AND`/`OR`) do not allocate.
//!
//! Evaluation is in the spec's "fail fast mode" (CESQL §4.1): the first error stops evaluation
//! and is returned instead of a value.
//!
//! Choices where the spec leaves room are documented on [`parse`].

mod eval;
mod functions;
mod lexer;
mod like;
mod parser;

use std::fmt;

use switchyard_event::Event;

/// Parses and compiles a CESQL expression.
///
/// Syntax (CESQL §2): keywords and function names are case-insensitive; attribute identifiers
/// are lower-cased; whitespace is space, tab, CR and LF. Precedence (CESQL §3.6), tightest first:
/// function invocations; unary `NOT` and `-`; `LIKE`, `EXISTS`, `IN`; `*` `/` `%`; `+` `-`;
/// comparisons; `AND` `OR` `XOR` (one level, left to right, as §3.6 lists them together).
///
/// Choices where the spec is open:
/// - String literals: inside `'…'`, `\'` and `''` stand for `'`; inside `"…"`, `\"` and `""`
///   stand for `"`. Any other backslash is kept as written, so `LIKE` patterns see `\%`, `\_`.
/// - `LIKE` patterns: `\%`, `\_` and `\\` match `%`, `_` and `\`; a backslash before any other
///   character is a literal backslash.
/// - Integer literals take an optional sign (`-2147483648` is valid); out-of-range literals are
///   parse errors.
/// - Calls to unknown functions, or with an unsupported number of arguments, parse and fail
///   when evaluated with a `missingFunction` error (CESQL §3.5).
/// - Nesting is limited to a depth of 200 so that evaluation can never exhaust the stack.
pub fn parse(text: &str) -> Result<Expression, ParseError> {
    let root = parser::parse(text)?;
    Ok(Expression { root })
}

/// A syntax error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct ParseError {
    /// 0-based offset, in characters, of the problem (the text length when the text ended early).
    pub position: usize,
    /// What is wrong, in lowercase, quoting the offending text.
    pub message: String,
}

/// A compiled CESQL expression. Cheap to evaluate any number of times, from any thread.
#[derive(Debug, Clone)]
pub struct Expression {
    root: parser::Node,
}

impl Expression {
    /// Fail-fast evaluation (spec: the first error stops evaluation).
    ///
    /// A missing attribute is a `missingAttribute` error (CESQL §3.2), a failed implicit or
    /// explicit cast a `cast` error (§3.7), a division by zero or an integer overflow a `math`
    /// error, a call that cannot be dispatched a `missingFunction` error (§3.5), and invalid
    /// function arguments a `functionEvaluation` error.
    pub fn evaluate(&self, event: &Event) -> Result<Value, EvalError> {
        match eval::eval(&self.root, event) {
            Ok(value) => Ok(value.into_value()),
            Err(fault) => Err(fault.into_error()),
        }
    }

    /// The `attribute = 'literal'` comparisons the expression cannot be true without: the
    /// whole expression, or operands of its top-level AND. A broker indexes triggers by these,
    /// so that only triggers whose required value an event carries evaluate their expression.
    pub fn required_equalities(&self) -> Vec<(&str, &str)> {
        let operands: &[parser::Node] = match &self.root {
            parser::Node::Logic(parser::LogicOp::And, operands) => operands,
            root => std::slice::from_ref(root),
        };
        operands.iter().filter_map(parser::Node::attribute_equals_string).collect()
    }

    /// Filter semantics (CESQL v1.0 §1.2): true only when evaluation succeeds and yields the
    /// Boolean `true`; any error, or a result of another type, means the event does not pass.
    /// Errors are dropped unformatted, and the common filter shapes (whose result is always a
    /// Boolean) are evaluated without building intermediate values.
    pub fn matches(&self, event: &Event) -> bool {
        if self.root.yields_boolean() {
            eval::eval_bool(&self.root, event).unwrap_or(false)
        } else {
            matches!(self.evaluate(event), Ok(Value::Boolean(true)))
        }
    }
}

/// A CESQL value (CESQL §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A Boolean.
    Boolean(bool),
    /// A 32-bit signed Integer.
    Integer(i32),
    /// A String.
    String(String),
}

impl fmt::Display for Value {
    /// The value cast to String (CESQL §3.7).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::String(s) => f.write_str(s),
        }
    }
}

/// An evaluation error (CESQL §3.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} error: {message}")]
pub struct EvalError {
    /// The spec's error type.
    pub kind: ErrorKind,
    /// What went wrong, in lowercase, quoting the offending value.
    pub message: String,
}

/// The error types every CESQL engine supports (CESQL §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An error while parsing.
    Parse,
    /// An error in a mathematical operation: division by zero, overflow.
    Math,
    /// An implicit or explicit cast failed.
    Cast,
    /// The expression addresses an attribute the event does not have.
    MissingAttribute,
    /// A call to a function that does not exist with that number of arguments.
    MissingFunction,
    /// A function rejected its arguments.
    FunctionEvaluation,
    /// Any other error.
    Generic,
}

impl ErrorKind {
    /// The name the CESQL TCK uses for this error type.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Parse => "parse",
            ErrorKind::Math => "math",
            ErrorKind::Cast => "cast",
            ErrorKind::MissingAttribute => "missingAttribute",
            ErrorKind::MissingFunction => "missingFunction",
            ErrorKind::FunctionEvaluation => "functionEvaluation",
            ErrorKind::Generic => "generic",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn expression_is_send_and_sync() {
        assert_send_sync::<Expression>();
        assert_send_sync::<ParseError>();
        assert_send_sync::<EvalError>();
    }

    #[test]
    fn error_displays() {
        let e = ParseError { position: 3, message: "unexpected 'x'".into() };
        assert_eq!(e.to_string(), "at position 3: unexpected 'x'");
        let e = EvalError { kind: ErrorKind::Math, message: "division by zero".into() };
        assert_eq!(e.to_string(), "math error: division by zero");
    }
}
