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
/// - Limits, so that neither parsing nor evaluating untrusted text can exhaust the stack, the
///   memory or the time of the thread it runs on: the text is at most [`MAX_EXPRESSION_BYTES`]
///   bytes, nests at most [`MAX_NESTING`] levels deep, and each `LIKE` pattern has at most
///   [`MAX_LIKE_PATTERN_CHARS`] characters; evaluation does at most [`MAX_EVALUATION_WORK`]
///   units of work (see [`Expression::evaluate`]).
pub fn parse(text: &str) -> Result<Expression, ParseError> {
    let root = parser::parse(text)?;
    Ok(Expression { root })
}

/// The longest expression `parse` accepts, in bytes (128 KiB): far above any hand-written
/// filter, and it bounds the tree, so the work of evaluating it, to tens of thousands of nodes.
pub const MAX_EXPRESSION_BYTES: usize = parser::MAX_EXPRESSION_BYTES;

/// The deepest nesting `parse` accepts (parentheses, unary operators, function calls, and the
/// depth of the tree binary operators build), so that the recursive parser and evaluator stay
/// far from the end of a 2 MiB thread stack.
pub const MAX_NESTING: usize = parser::MAX_DEPTH;

/// The longest `LIKE` pattern `parse` accepts, in characters: `LIKE` runs in time linear in
/// the value times ⌈pattern characters / 64⌉, so this bounds that factor to 4.
pub const MAX_LIKE_PATTERN_CHARS: usize = like::MAX_PATTERN_CHARS;

/// The work one evaluation may do: one unit per node evaluated, plus about one per byte that
/// an operator or function reads or writes (`LIKE` counts the value's bytes times its words of
/// state). Running out is a `generic` error, so the event does not pass a filter. One unit is
/// about a nanosecond: the budget keeps an evaluation near a millisecond on any event, while
/// leaving room for many passes over ordinary attributes (a 1 MiB attribute can still be read
/// about once).
pub const MAX_EVALUATION_WORK: u64 = 1_000_000;

/// An evaluation stopped by its work budget ([`MAX_EVALUATION_WORK`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("evaluation exceeds the work budget of {budget} units (cesql evaluation work budget)")]
pub struct BudgetExhausted {
    /// The budget.
    pub budget: u64,
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
    /// function arguments a `functionEvaluation` error; running out of the
    /// [`MAX_EVALUATION_WORK`] budget a `generic` error.
    pub fn evaluate(&self, event: &Event) -> Result<Value, EvalError> {
        let scope = eval::Scope::new(event, MAX_EVALUATION_WORK);
        match eval::eval(&self.root, &scope) {
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

    /// [`Expression::matches`], telling apart an evaluation stopped by the
    /// [`MAX_EVALUATION_WORK`] budget (so that callers can count it) from other failures.
    pub fn matches_within_budget(&self, event: &Event) -> Result<bool, BudgetExhausted> {
        let scope = eval::Scope::new(event, MAX_EVALUATION_WORK);
        let matched = if self.root.yields_boolean() {
            eval::eval_bool(&self.root, &scope).unwrap_or(false)
        } else {
            matches!(eval::eval(&self.root, &scope), Ok(eval::Val::Bool(true)))
        };
        if scope.exhausted() {
            return Err(BudgetExhausted { budget: MAX_EVALUATION_WORK });
        }
        Ok(matched)
    }

    /// Filter semantics (CESQL v1.0 §1.2): true only when evaluation succeeds and yields the
    /// Boolean `true`; any error, or a result of another type, means the event does not pass.
    /// Errors are dropped unformatted, and the common filter shapes (whose result is always a
    /// Boolean) are evaluated without building intermediate values.
    pub fn matches(&self, event: &Event) -> bool {
        if self.root.yields_boolean() {
            let scope = eval::Scope::new(event, MAX_EVALUATION_WORK);
            eval::eval_bool(&self.root, &scope).unwrap_or(false)
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

    fn event_with(name: &str, value: String) -> Event {
        let s = |v: &str| switchyard_event::AttrValue::String(v.to_owned());
        Event::new(
            vec![
                ("specversion".into(), s("1.0")),
                ("id".into(), s("1")),
                ("source".into(), s("/s")),
                ("type".into(), s("t")),
                (name.into(), switchyard_event::AttrValue::String(value)),
            ],
            None,
        )
        .unwrap()
    }

    #[test]
    fn long_expressions_are_refused_naming_the_limit() {
        let text = format!("'{}' = 'a'", "a".repeat(MAX_EXPRESSION_BYTES));
        let error = parse(&text).unwrap_err();
        assert_eq!(error.position, 0);
        assert!(error.message.contains("above the limit of 131072 (cesql expression length)"), "{error}");
    }

    #[test]
    fn long_like_patterns_are_refused_naming_the_limit() {
        let error = parse(&format!("type LIKE '{}'", "%a".repeat(200))).unwrap_err();
        assert_eq!(error.position, 10);
        assert!(error.message.contains("above the limit of 256 (like pattern length)"), "{error}");
        assert!(parse(&format!("type LIKE '{}'", "%a".repeat(128))).is_ok());
    }

    /// Parsing and evaluating the deepest accepted expressions, and refusing much deeper ones,
    /// fit in a small stack, even unoptimised (an async worker thread has 2 MiB).
    #[test]
    fn nesting_fits_a_small_stack() {
        let run = || {
            let event = event_with("x", "1".to_owned());
            let depth = MAX_NESTING - 1;
            let accepted = [
                format!("{}x{}", "(".repeat(depth), ")".repeat(depth)),
                format!("{}TRUE", "NOT ".repeat(depth)),
                format!("{}x", "- ".repeat(depth)),
                format!("{}x{}", "ABS(".repeat(depth), ")".repeat(depth)),
                format!("{}x{}", "x IN (".repeat(depth), ")".repeat(depth)),
                vec!["x"; MAX_NESTING].join(" + "),
            ];
            for text in &accepted {
                let expression = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
                let _ = expression.evaluate(&event);
                let _ = expression.matches(&event);
            }
            for text in [
                format!("{}x{}", "(".repeat(60_000), ")".repeat(60_000)),
                format!("{}x", "NOT ".repeat(30_000)),
                format!("{}x", "-".repeat(100_000)),
                format!("{}x{}", "ABS(".repeat(20_000), ")".repeat(20_000)),
                vec!["x"; 30_000].join(" * "),
            ] {
                let error = parse(&text).unwrap_err();
                assert!(error.message.contains("(cesql nesting limit)"), "{error}");
            }
        };
        std::thread::Builder::new().stack_size(1 << 20).spawn(run).unwrap().join().unwrap();
    }

    #[test]
    fn evaluation_stops_at_the_work_budget() {
        // 600 kB: an attribute an accepted 1 MiB event can carry.
        let event = event_with("big", format!("{}b", "a".repeat(600_000)));
        let once = parse("big LIKE '%a_b'").unwrap();
        assert!(once.matches(&event));
        let twice = parse("big LIKE '%a_c' OR big LIKE '%a_b'").unwrap();
        assert!(!twice.matches(&event));
        let error = twice.evaluate(&event).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Generic);
        assert!(error.message.contains("work budget of 1000000 units"), "{error}");
        // Concatenations spend before they allocate.
        let error = parse("LENGTH(CONCAT(big, big, big, big, big)) > 0").unwrap().evaluate(&event).unwrap_err();
        assert!(error.message.contains("work budget"), "{error}");
        // Many cheap nodes fit: a long OR chain of short comparisons.
        let chain = (0..5_000).map(|i| format!("type = 'x{i}'")).collect::<Vec<_>>().join(" OR ");
        assert_eq!(parse(&chain).unwrap().evaluate(&event), Ok(Value::Boolean(false)));
    }

    #[test]
    fn error_displays() {
        let e = ParseError { position: 3, message: "unexpected 'x'".into() };
        assert_eq!(e.to_string(), "at position 3: unexpected 'x'");
        let e = EvalError { kind: ErrorKind::Math, message: "division by zero".into() };
        assert_eq!(e.to_string(), "math error: division by zero");
    }
}
