//! Fail-fast evaluation (CESQL §3.6, §4.1) over borrowed values.

use std::borrow::Cow;
use std::cell::Cell;

use switchyard_event::{AttrValue, Event};

use crate::parser::{ArithOp, CmpOp, LogicOp, Node};
use crate::{functions, ErrorKind, EvalError, Value};

/// A CESQL type (CESQL §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    Boolean,
    Integer,
    String,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Boolean => "boolean",
            Type::Integer => "integer",
            Type::String => "string",
        }
    }
}

/// A value during evaluation: strings borrow from the event or the expression when they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val<'a> {
    Bool(bool),
    Int(i32),
    Str(Cow<'a, str>),
}

impl<'a> Val<'a> {
    fn from_literal(value: &'a Value) -> Val<'a> {
        match value {
            Value::Boolean(b) => Val::Bool(*b),
            Value::Integer(i) => Val::Int(*i),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
        }
    }

    /// CESQL §3.2: attribute values keep their CESQL type; everything else is a String.
    fn from_attribute(value: &'a AttrValue) -> Val<'a> {
        match value {
            AttrValue::String(s) => Val::Str(Cow::Borrowed(s)),
            AttrValue::Bool(b) => Val::Bool(*b),
            AttrValue::Integer(i) => Val::Int(*i),
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Val::Bool(b) => Value::Boolean(b),
            Val::Int(i) => Value::Integer(i),
            Val::Str(s) => Value::String(s.into_owned()),
        }
    }

    fn ty(&self) -> Type {
        match self {
            Val::Bool(_) => Type::Boolean,
            Val::Int(_) => Type::Integer,
            Val::Str(_) => Type::String,
        }
    }

    /// CESQL §3.7 casts to Boolean: Integer 0 is false, any other true; a String is `true` or
    /// `false` in any case, anything else is a cast error.
    pub(crate) fn into_bool(self) -> Result<bool, Fault<'a>> {
        match self {
            Val::Bool(b) => Ok(b),
            Val::Int(i) => Ok(i != 0),
            Val::Str(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Val::Str(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            other => Err(Fault::Cast(other, Type::Boolean)),
        }
    }

    /// CESQL §3.7 casts to Integer: `true` is 1, `false` 0; a String is a base-10 32-bit integer
    /// with an optional leading sign, anything else (including overflow) is a cast error.
    pub(crate) fn into_int(self) -> Result<i32, Fault<'a>> {
        match self {
            Val::Bool(b) => Ok(i32::from(b)),
            Val::Int(i) => Ok(i),
            Val::Str(s) => match parse_int(&s) {
                Some(i) => Ok(i),
                None => Err(Fault::Cast(Val::Str(s), Type::Integer)),
            },
        }
    }

    /// CESQL §3.7 casts to String (never fails).
    pub(crate) fn into_str(self) -> Cow<'a, str> {
        match self {
            Val::Str(s) => s,
            Val::Bool(true) => Cow::Borrowed("true"),
            Val::Bool(false) => Cow::Borrowed("false"),
            Val::Int(i) => Cow::Owned(i.to_string()),
        }
    }

    /// Casts to `ty`.
    fn cast(self, ty: Type) -> Result<Val<'a>, Fault<'a>> {
        Ok(match ty {
            Type::Boolean => Val::Bool(self.into_bool()?),
            Type::Integer => Val::Int(self.into_int()?),
            Type::String => Val::Str(self.into_str()),
        })
    }
}

/// `String -> Integer` (CESQL §3.7): optional `+`/`-`, then base-10 digits only.
fn parse_int(s: &str) -> Option<i32> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An evaluation error, kept cheap to build: `matches` drops it unformatted.
#[derive(Debug)]
pub(crate) enum Fault<'a> {
    MissingAttribute(&'a str),
    MissingFunction(&'a str, usize),
    Cast(Val<'a>, Type),
    Other(ErrorKind, String),
}

impl Fault<'_> {
    pub(crate) fn math(message: impl Into<String>) -> Self {
        Fault::Other(ErrorKind::Math, message.into())
    }

    pub(crate) fn function(message: impl Into<String>) -> Self {
        Fault::Other(ErrorKind::FunctionEvaluation, message.into())
    }

    pub(crate) fn into_error(self) -> EvalError {
        let (kind, message) = match self {
            Fault::MissingAttribute(name) => (ErrorKind::MissingAttribute, format!("missing attribute '{name}'")),
            Fault::MissingFunction(name, arity) => {
                let arguments = if arity == 1 { "argument" } else { "arguments" };
                (ErrorKind::MissingFunction, format!("no function '{name}' taking {arity} {arguments}"))
            }
            Fault::Cast(value, ty) => {
                let shown = match value {
                    Val::Str(s) => format!("'{s}'"),
                    Val::Bool(b) => b.to_string(),
                    Val::Int(i) => i.to_string(),
                };
                (ErrorKind::Cast, format!("cannot cast {shown} to {}", ty.name()))
            }
            Fault::Other(kind, message) => (kind, message),
        };
        EvalError { kind, message }
    }
}

pub(crate) type Outcome<'a> = Result<Val<'a>, Fault<'a>>;

/// What one evaluation reads, and the work it may still do: one unit per node, plus about one
/// per byte a string operation reads or writes (times the words of state for `LIKE`). Running
/// out stops evaluation with a `generic` error, so that no expression, however built, holds
/// the thread it runs on for long on any accepted event.
pub(crate) struct Scope<'a> {
    pub(crate) event: &'a Event,
    budget: u64,
    remaining: Cell<u64>,
    exhausted: Cell<bool>,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(event: &'a Event, budget: u64) -> Scope<'a> {
        Scope { event, budget, remaining: Cell::new(budget), exhausted: Cell::new(false) }
    }

    /// Spends `units` of the budget, or fails when it is spent.
    pub(crate) fn charge<'b>(&self, units: u64) -> Result<(), Fault<'b>> {
        match self.remaining.get().checked_sub(units) {
            Some(left) => {
                self.remaining.set(left);
                Ok(())
            }
            None => {
                self.remaining.set(0);
                self.exhausted.set(true);
                Err(Fault::Other(
                    ErrorKind::Generic,
                    format!(
                        "evaluation exceeds the work budget of {} units (cesql evaluation work budget)",
                        self.budget
                    ),
                ))
            }
        }
    }

    /// Whether a charge could not be paid.
    pub(crate) fn exhausted(&self) -> bool {
        self.exhausted.get()
    }

    /// Spends what reading `text` costs.
    pub(crate) fn charge_str<'b>(&self, text: &str) -> Result<(), Fault<'b>> {
        self.charge(units(text.len()))
    }

    /// Spends what reading the string operands of a binary operator costs.
    fn charge_operands<'b>(&self, left: &Val<'_>, right: &Val<'_>) -> Result<(), Fault<'b>> {
        let length = |v: &Val<'_>| match v {
            Val::Str(s) => s.len(),
            _ => 0,
        };
        self.charge(units(length(left)).saturating_add(units(length(right))))
    }
}

/// A byte count as work units.
pub(crate) fn units(bytes: usize) -> u64 {
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// Evaluates `node` against the scope's event, stopping at the first error.
pub(crate) fn eval<'a>(node: &'a Node, cx: &Scope<'a>) -> Outcome<'a> {
    cx.charge(1)?;
    let event = cx.event;
    match node {
        Node::Literal(value) => Ok(Val::from_literal(value)),
        Node::Attribute(name) => match event.get(name) {
            Some(value) => Ok(Val::from_attribute(value)),
            // CESQL §3.2: addressing a missing attribute is a MissingAttributeError.
            None => Err(Fault::MissingAttribute(name)),
        },
        // CESQL §3.4.4.
        Node::Exists(name) => Ok(Val::Bool(event.get(name).is_some())),
        // CESQL §3.4.1 and §3.7 rule 1: unary operators are not ambiguous; cast the operand.
        Node::Not(operand) => {
            let operand = eval(operand, cx)?;
            cx.charge_operands(&operand, &Val::Bool(false))?;
            Ok(Val::Bool(!operand.into_bool()?))
        }
        Node::Negate(operand) => {
            let operand = eval(operand, cx)?;
            cx.charge_operands(&operand, &Val::Bool(false))?;
            let i = operand.into_int()?;
            i.checked_neg().map(Val::Int).ok_or_else(|| Fault::math(format!("-({i}) overflows a 32-bit integer")))
        }
        Node::Arith(op, left, right) => {
            let (l, r) = (eval(left, cx)?, eval(right, cx)?);
            cx.charge_operands(&l, &r)?;
            arithmetic(*op, l.into_int()?, r.into_int()?).map(Val::Int)
        }
        Node::Compare(op, left, right) => {
            let (l, r) = (eval(left, cx)?, eval(right, cx)?);
            cx.charge_operands(&l, &r)?;
            compare(*op, l, r).map(Val::Bool)
        }
        Node::Logic(op, operands) => logic(*op, operands, cx).map(Val::Bool),
        // CESQL §3.4.3: the left operand is cast to String.
        Node::Like { value, pattern, negated } => {
            let value = eval(value, cx)?.into_str();
            cx.charge(pattern.cost(value.len()))?;
            Ok(Val::Bool(pattern.matches(&value) != *negated))
        }
        // CESQL §3.4.5 and §3.7: `=` semantics with the left operand's type as the target type
        // of every set element. Every element is evaluated, so an erroneous element is reported
        // whatever its position.
        Node::In { value, set, negated } => {
            let value = eval(value, cx)?;
            let ty = value.ty();
            let mut found = false;
            for element in set.iter() {
                let element = eval(element, cx)?;
                cx.charge_operands(&value, &element)?;
                let element = element.cast(ty)?;
                found = found || element == value;
            }
            Ok(Val::Bool(found != *negated))
        }
        Node::Call { function, args } => functions::call(*function, args, cx),
        // CESQL §3.5: an invocation that cannot be dispatched is a MissingFunctionError.
        Node::MissingFunction { name, arity } => Err(Fault::MissingFunction(name, *arity)),
    }
}

/// Evaluates `node` and casts the result to Boolean (CESQL §3.7): the same as
/// `eval(node, cx)?.into_bool()`, with the shapes filters are made of (logic, `EXISTS`,
/// attribute compared with a string literal, attribute `LIKE` pattern) computed directly,
/// without building intermediate values.
pub(crate) fn eval_bool<'a>(node: &'a Node, cx: &Scope<'a>) -> Result<bool, Fault<'a>> {
    let event = cx.event;
    match node {
        Node::Logic(op, operands) => {
            cx.charge(1)?;
            logic(*op, operands, cx)
        }
        Node::Exists(name) => {
            cx.charge(1)?;
            Ok(event.get(name).is_some())
        }
        Node::Not(operand) => {
            cx.charge(1)?;
            Ok(!eval_bool(operand, cx)?)
        }
        Node::Compare(op @ (CmpOp::Eq | CmpOp::NotEq), left, right) => {
            if let (Node::Attribute(name), Node::Literal(Value::String(literal))) = (&**left, &**right) {
                match event.get(name) {
                    Some(AttrValue::String(value)) => {
                        cx.charge(units(literal.len()).saturating_add(1))?;
                        return Ok((value == literal) == (*op == CmpOp::Eq));
                    }
                    None => return Err(Fault::MissingAttribute(name)),
                    Some(_) => {}
                }
            }
            eval(node, cx)?.into_bool()
        }
        Node::Like { value, pattern, negated } => {
            if let Node::Attribute(name) = &**value {
                match event.get(name) {
                    Some(AttrValue::String(value)) => {
                        cx.charge(pattern.cost(value.len()).saturating_add(1))?;
                        return Ok(pattern.matches(value) != *negated);
                    }
                    None => return Err(Fault::MissingAttribute(name)),
                    Some(_) => {}
                }
            }
            eval(node, cx)?.into_bool()
        }
        other => eval(other, cx)?.into_bool(),
    }
}

/// CESQL §3.4.2: Integer x Integer -> Integer, truncated division; overflow is a MathError.
fn arithmetic<'a>(op: ArithOp, l: i32, r: i32) -> Result<i32, Fault<'a>> {
    let result = match op {
        ArithOp::Add => l.checked_add(r),
        ArithOp::Sub => l.checked_sub(r),
        ArithOp::Mul => l.checked_mul(r),
        ArithOp::Div | ArithOp::Rem if r == 0 => {
            return Err(Fault::math(format!("{l} {} 0 divides by zero", op.symbol())));
        }
        // `checked_div`/`checked_rem` truncate toward zero, the remainder taking the sign of the
        // dividend, as §3.4.2 requires. Only `i32::MIN / -1` overflows; `i32::MIN % -1` is 0.
        ArithOp::Div => l.checked_div(r),
        ArithOp::Rem => Some(l.wrapping_rem(r)),
    };
    result.ok_or_else(|| Fault::math(format!("{l} {} {r} overflows a 32-bit integer", op.symbol())))
}

/// CESQL §3.4.2 and §3.7 rule 2. `=`, `!=`, `<>` are ambiguous (defined for every type), so the
/// left operand is cast to the right operand's type; the ordering operators are defined only
/// for Integer x Integer, so both operands are cast to Integer.
fn compare<'a>(op: CmpOp, l: Val<'a>, r: Val<'a>) -> Result<bool, Fault<'a>> {
    let ordering = |l: Val<'a>, r: Val<'a>| -> Result<std::cmp::Ordering, Fault<'a>> {
        let l = l.into_int()?;
        Ok(l.cmp(&r.into_int()?))
    };
    Ok(match op {
        CmpOp::Eq => l.cast(r.ty())? == r,
        CmpOp::NotEq => l.cast(r.ty())? != r,
        CmpOp::Lt => ordering(l, r)?.is_lt(),
        CmpOp::Le => ordering(l, r)?.is_le(),
        CmpOp::Gt => ordering(l, r)?.is_gt(),
        CmpOp::Ge => ordering(l, r)?.is_ge(),
    })
}

/// CESQL §3.4.2: Boolean x Boolean -> Boolean; AND and OR short-circuit (§3.6). An n-ary node
/// is a left-nested chain of the same operator, so the short circuit is the same.
fn logic<'a>(op: LogicOp, operands: &'a [Node], cx: &Scope<'a>) -> Result<bool, Fault<'a>> {
    let mut operands = operands.iter();
    let mut acc = match operands.next() {
        Some(first) => eval_bool(first, cx)?,
        None => return Ok(false),
    };
    for operand in operands {
        match op {
            LogicOp::And if !acc => return Ok(false),
            LogicOp::Or if acc => return Ok(true),
            LogicOp::And | LogicOp::Or => acc = eval_bool(operand, cx)?,
            LogicOp::Xor => acc ^= eval_bool(operand, cx)?,
        }
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_integer() {
        assert_eq!(parse_int("12"), Some(12));
        assert_eq!(parse_int("+12"), Some(12));
        assert_eq!(parse_int("-2147483648"), Some(i32::MIN));
        assert_eq!(parse_int("2147483648"), None);
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("+"), None);
        assert_eq!(parse_int(" 1"), None);
        assert_eq!(parse_int("1.0"), None);
        assert_eq!(parse_int("+-1"), None);
    }

    #[test]
    fn arithmetic_truncates() {
        assert_eq!(arithmetic(ArithOp::Div, -7, 2).unwrap(), -3);
        assert_eq!(arithmetic(ArithOp::Rem, -7, 2).unwrap(), -1);
        assert_eq!(arithmetic(ArithOp::Rem, 7, -2).unwrap(), 1);
        assert!(arithmetic(ArithOp::Div, i32::MIN, -1).is_err());
        assert_eq!(arithmetic(ArithOp::Rem, i32::MIN, -1).unwrap(), 0);
        assert!(arithmetic(ArithOp::Add, i32::MAX, 1).is_err());
    }
}
