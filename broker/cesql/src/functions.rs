//! Built-in functions (CESQL §3.5) and their dispatch by name and arity.
//!
//! Functions are not ambiguous (§3.5: no two share a name and an arity), so every argument is
//! cast to its parameter type (§3.7 rules 1 and 3); a failed cast is a CastError. Arguments are
//! all evaluated, left to right, before any is cast.

use std::borrow::Cow;

use crate::eval::{eval, units, Fault, Outcome, Scope, Val};
use crate::parser::Node;

/// A built-in function, resolved at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    Substring,
    Abs,
    Int,
    Bool,
    String,
    IsInt,
    IsBool,
}

/// The function `name` (any case) taking `arity` arguments, if there is one.
pub(crate) fn resolve(name: &str, arity: usize) -> Option<Function> {
    let upper = name.to_ascii_uppercase();
    let (function, accepts) = match upper.as_str() {
        "LENGTH" => (Function::Length, arity == 1),
        // CONCAT(x1, …): String^n -> String, n >= 0.
        "CONCAT" => (Function::Concat, true),
        // CONCAT_WS(delimiter, x1, …): String x String^n -> String, n >= 0.
        "CONCAT_WS" => (Function::ConcatWs, arity >= 1),
        "LOWER" => (Function::Lower, arity == 1),
        "UPPER" => (Function::Upper, arity == 1),
        "TRIM" => (Function::Trim, arity == 1),
        "LEFT" => (Function::Left, arity == 2),
        "RIGHT" => (Function::Right, arity == 2),
        "SUBSTRING" => (Function::Substring, arity == 2 || arity == 3),
        "ABS" => (Function::Abs, arity == 1),
        "INT" => (Function::Int, arity == 1),
        "BOOL" => (Function::Bool, arity == 1),
        "STRING" => (Function::String, arity == 1),
        "IS_INT" => (Function::IsInt, arity == 1),
        "IS_BOOL" => (Function::IsBool, arity == 1),
        _ => return None,
    };
    accepts.then_some(function)
}

/// Evaluates the arguments and applies `function`. Every function reads its string arguments
/// once and writes at most about as much, so each call spends the length of its string
/// arguments from the budget; the concatenations spend each part before appending it, so that
/// no result outgrows the budget.
pub(crate) fn call<'a>(function: Function, args: &'a [Node], cx: &Scope<'a>) -> Outcome<'a> {
    let arg = |node: &'a Node| -> Outcome<'a> {
        let value = eval(node, cx)?;
        if let Val::Str(s) = &value {
            cx.charge_str(s)?;
        }
        Ok(value)
    };
    match (function, args) {
        // String manipulation, CESQL §3.5.1.
        (Function::Length, [x]) => length(&arg(x)?.into_str()).map(Val::Int),
        (Function::Concat, parts) => {
            let mut out = String::new();
            for part in parts {
                let part = arg(part)?.into_str();
                cx.charge_str(&part)?;
                out.push_str(&part);
            }
            Ok(Val::Str(Cow::Owned(out)))
        }
        (Function::ConcatWs, [delimiter, parts @ ..]) => {
            let delimiter = arg(delimiter)?;
            let mut values = Vec::with_capacity(parts.len());
            for part in parts {
                values.push(arg(part)?);
            }
            let delimiter = delimiter.into_str();
            let mut out = String::new();
            for (i, value) in values.into_iter().enumerate() {
                let value = value.into_str();
                cx.charge(units(delimiter.len()).saturating_add(units(value.len())))?;
                if i > 0 {
                    out.push_str(&delimiter);
                }
                out.push_str(&value);
            }
            Ok(Val::Str(Cow::Owned(out)))
        }
        (Function::Lower, [x]) => Ok(Val::Str(lower(arg(x)?.into_str()))),
        (Function::Upper, [x]) => Ok(Val::Str(upper(arg(x)?.into_str()))),
        (Function::Trim, [x]) => Ok(Val::Str(trim(arg(x)?.into_str()))),
        (Function::Left, [x, y]) => {
            let (x, y) = (arg(x)?, arg(y)?);
            left(x.into_str(), y.into_int()?).map(Val::Str)
        }
        (Function::Right, [x, y]) => {
            let (x, y) = (arg(x)?, arg(y)?);
            right(x.into_str(), y.into_int()?).map(Val::Str)
        }
        (Function::Substring, [x, pos]) => {
            let (x, pos) = (arg(x)?, arg(pos)?);
            substring(x.into_str(), pos.into_int()?, None).map(Val::Str)
        }
        (Function::Substring, [x, pos, len]) => {
            let (x, pos, len) = (arg(x)?, arg(pos)?, arg(len)?);
            let x = x.into_str();
            let pos = pos.into_int()?;
            substring(x, pos, Some(len.into_int()?)).map(Val::Str)
        }
        // Math, CESQL §3.5.2: ABS(-2147483648) is a MathError.
        (Function::Abs, [x]) => {
            let x = arg(x)?.into_int()?;
            x.checked_abs().map(Val::Int).ok_or_else(|| Fault::math(format!("abs({x}) overflows a 32-bit integer")))
        }
        // Casting functions: the explicit form of the §3.7 casts, from any type.
        (Function::Int, [x]) => Ok(Val::Int(arg(x)?.into_int()?)),
        (Function::Bool, [x]) => Ok(Val::Bool(arg(x)?.into_bool()?)),
        (Function::String, [x]) => Ok(Val::Str(arg(x)?.into_str())),
        // True when the §3.7 cast would succeed.
        (Function::IsInt, [x]) => Ok(Val::Bool(arg(x)?.into_int().is_ok())),
        (Function::IsBool, [x]) => Ok(Val::Bool(arg(x)?.into_bool().is_ok())),
        // `resolve` checked the arity, so this is unreachable; still, no panics.
        _ => Err(Fault::MissingFunction(name(function), args.len())),
    }
}

fn name(function: Function) -> &'static str {
    match function {
        Function::Length => "length",
        Function::Concat => "concat",
        Function::ConcatWs => "concat_ws",
        Function::Lower => "lower",
        Function::Upper => "upper",
        Function::Trim => "trim",
        Function::Left => "left",
        Function::Right => "right",
        Function::Substring => "substring",
        Function::Abs => "abs",
        Function::Int => "int",
        Function::Bool => "bool",
        Function::String => "string",
        Function::IsInt => "is_int",
        Function::IsBool => "is_bool",
    }
}

/// `LENGTH`: the number of characters (Unicode scalar values).
fn length<'a>(x: &str) -> Result<i32, Fault<'a>> {
    i32::try_from(x.chars().count())
        .map_err(|_| Fault::function("length of a string longer than 2147483647 characters"))
}

/// `LOWER`: Unicode lowercase; ASCII text already in lowercase is returned as is.
fn lower(x: Cow<'_, str>) -> Cow<'_, str> {
    if x.is_ascii() && !x.bytes().any(|b| b.is_ascii_uppercase()) {
        return x;
    }
    Cow::Owned(x.to_lowercase())
}

/// `UPPER`: Unicode uppercase; ASCII text already in uppercase is returned as is.
fn upper(x: Cow<'_, str>) -> Cow<'_, str> {
    if x.is_ascii() && !x.bytes().any(|b| b.is_ascii_lowercase()) {
        return x;
    }
    Cow::Owned(x.to_uppercase())
}

/// `TRIM`: removes leading and trailing Unicode `White_Space` characters (CESQL §3.5.1), and
/// nothing else (control characters stay).
fn trim(x: Cow<'_, str>) -> Cow<'_, str> {
    match x {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    }
}

/// The part of `x` between character offsets `from` and `to` (clamped), borrowing if `x` does.
fn slice_chars(x: Cow<'_, str>, from: usize, to: usize) -> Cow<'_, str> {
    let byte_at = |s: &str, chars: usize| s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i);
    let (start, end) = (byte_at(&x, from), byte_at(&x, to));
    match x {
        Cow::Borrowed(s) => Cow::Borrowed(s.get(start..end).unwrap_or_default()),
        Cow::Owned(s) => Cow::Owned(s.get(start..end).unwrap_or_default().to_owned()),
    }
}

/// `LEFT(x, y)`: the first `y` characters of `x`, or `x` when it is shorter; `y < 0` is a
/// FunctionEvaluationError.
fn left<'a>(x: Cow<'a, str>, y: i32) -> Result<Cow<'a, str>, Fault<'a>> {
    let count = usize::try_from(y).map_err(|_| Fault::function(format!("left: length {y} is negative")))?;
    Ok(slice_chars(x, 0, count))
}

/// `RIGHT(x, y)`: the last `y` characters of `x`, or `x` when it is shorter; `y < 0` is a
/// FunctionEvaluationError.
fn right<'a>(x: Cow<'a, str>, y: i32) -> Result<Cow<'a, str>, Fault<'a>> {
    let count = usize::try_from(y).map_err(|_| Fault::function(format!("right: length {y} is negative")))?;
    let total = x.chars().count();
    Ok(slice_chars(x, total.saturating_sub(count), total))
}

/// `SUBSTRING(x, pos[, len])` (CESQL §3.5.1): characters are indexed from 1; a negative `pos`
/// counts from the end; `pos = 0` gives the empty string; `pos > LENGTH(x)`,
/// `pos < -LENGTH(x)` and a negative `len` are FunctionEvaluationErrors. A `len` longer than
/// what is left gives the rest of the string.
///
/// The spec does not order the `pos = 0` and negative `len` rules; a negative `len` is an
/// error whatever `pos` is.
fn substring<'a>(x: Cow<'a, str>, pos: i32, len: Option<i32>) -> Result<Cow<'a, str>, Fault<'a>> {
    if let Some(len) = len.filter(|len| *len < 0) {
        return Err(Fault::function(format!("substring: length {len} is negative")));
    }
    if pos == 0 {
        return Ok(Cow::Borrowed(""));
    }
    let total = i64::try_from(x.chars().count()).unwrap_or(i64::MAX);
    let pos = i64::from(pos);
    if pos > total || pos < -total {
        return Err(Fault::function(format!(
            "substring: position {pos} is out of range for a string of {total} characters"
        )));
    }
    let start = if pos > 0 { pos - 1 } else { total + pos };
    let end = match len {
        Some(len) => total.min(start + i64::from(len)),
        None => total,
    };
    let as_usize = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(slice_chars(x, as_usize(start), as_usize(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_is_case_insensitive_and_checks_arity() {
        assert_eq!(resolve("concat_ws", 1), Some(Function::ConcatWs));
        assert_eq!(resolve("Concat_WS", 0), None);
        assert_eq!(resolve("concat", 0), Some(Function::Concat));
        assert_eq!(resolve("substring", 1), None);
        assert_eq!(resolve("substring", 3), Some(Function::Substring));
        assert_eq!(resolve("nope", 1), None);
    }

    #[test]
    fn borrowed_results_stay_borrowed() {
        assert!(matches!(trim(Cow::Borrowed("  a ")), Cow::Borrowed("a")));
        assert!(matches!(lower(Cow::Borrowed("abc")), Cow::Borrowed("abc")));
        assert!(matches!(left(Cow::Borrowed("abc"), 2), Ok(Cow::Borrowed("ab"))));
        assert!(matches!(substring(Cow::Borrowed("abcdef"), -2, None), Ok(Cow::Borrowed("ef"))));
    }

    #[test]
    fn unicode_is_counted_in_characters() {
        assert_eq!(length("héllo").unwrap(), 5);
        assert_eq!(left(Cow::Borrowed("héllo"), 2).unwrap(), "hé");
        assert_eq!(right(Cow::Borrowed("héllo"), 4).unwrap(), "éllo");
        assert_eq!(substring(Cow::Borrowed("héllo"), 2, Some(2)).unwrap(), "él");
        assert_eq!(upper(Cow::Borrowed("straße")), "STRASSE");
    }
}
