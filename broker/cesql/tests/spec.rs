//! Table-driven tests per section of the CESQL v1.0 specification, beyond the TCK.

use switchyard_cesql::{parse, ErrorKind, Value};
use switchyard_event::{AttrValue, Event};

use ErrorKind::*;

/// What a case expects.
#[derive(Debug)]
enum Want {
    Bool(bool),
    Int(i32),
    Str(&'static str),
    Error(ErrorKind),
}

use Want::{Bool, Error, Int, Str};

/// The event every case runs against.
fn event() -> Event {
    let s = |v: &str| AttrValue::String(v.to_owned());
    Event::new(
        vec![
            ("specversion".into(), s("1.0")),
            ("id".into(), s("order-1")),
            ("source".into(), s("/orders/eu/42")),
            ("type".into(), s("com.example.order.created")),
            ("subject".into(), s("  Ünïcode Straße  ")),
            ("time".into(), s("2024-06-13T10:00:00Z")),
            ("sequence".into(), s("10")),
            ("negative".into(), s("-7")),
            ("word".into(), s("hello")),
            ("flag".into(), s("TRUE")),
            ("mybool".into(), AttrValue::Bool(true)),
            ("myint".into(), AttrValue::Integer(42)),
            ("empty".into(), s("")),
            ("backslash".into(), s(r"a\b")),
            ("percent".into(), s("100%")),
        ],
        None,
    )
    .unwrap()
}

fn check(section: &str, cases: &[(&str, Want)]) {
    let event = event();
    let mut failures = Vec::new();
    for (text, want) in cases {
        let got = match parse(text) {
            Err(e) => Err(Parse).map_err(|k| (k, e.to_string())),
            Ok(expression) => expression.evaluate(&event).map_err(|e| (e.kind, e.message)),
        };
        let ok = match (want, &got) {
            (Bool(b), Ok(Value::Boolean(v))) => b == v,
            (Int(i), Ok(Value::Integer(v))) => i == v,
            (Str(s), Ok(Value::String(v))) => s == v,
            (Error(kind), Err((k, _))) => kind == k,
            _ => false,
        };
        if !ok {
            failures.push(format!("  `{text}`: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{section}:\n{}", failures.join("\n"));
}

/// §2.2 literals.
#[test]
fn literals() {
    check(
        "literals",
        &[
            ("0", Int(0)),
            ("+7", Int(7)),
            ("-7", Int(-7)),
            ("2147483647", Int(i32::MAX)),
            ("-2147483648", Int(i32::MIN)),
            ("2147483648", Error(Parse)),
            ("-2147483649", Error(Parse)),
            ("99999999999999999999999", Error(Parse)),
            ("true", Bool(true)),
            ("TrUe", Bool(true)),
            ("FALSE", Bool(false)),
            ("'abc'", Str("abc")),
            ("\"abc\"", Str("abc")),
            ("''", Str("")),
            ("\"\"", Str("")),
            (r"'it\'s'", Str("it's")),
            ("'it''s'", Str("it's")),
            (r#""say \"hi\"""#, Str("say \"hi\"")),
            (r#""say ""hi""""#, Str("say \"hi\"")),
            (r#"'a"b'"#, Str("a\"b")),
            (r#""a'b""#, Str("a'b")),
            (r"'a\nb'", Str(r"a\nb")),
            (r"'a\\'", Str(r"a\\")),
            ("'ünï'", Str("ünï")),
            ("'abc", Error(Parse)),
            ("'abc\\'", Error(Parse)),
        ],
    );
}

/// §2.2 identifiers and §3.2 attribute access.
#[test]
fn identifiers() {
    check(
        "identifiers",
        &[
            ("id", Str("order-1")),
            ("ID", Str("order-1")),
            ("Type", Str("com.example.order.created")),
            ("time", Str("2024-06-13T10:00:00Z")),
            ("mybool", Bool(true)),
            ("myint", Int(42)),
            ("sequence", Str("10")),
            ("empty", Str("")),
            ("missing", Error(MissingAttribute)),
            ("data", Error(MissingAttribute)),
            ("a1b2", Error(MissingAttribute)),
            ("my_ext", Error(Parse)),
            ("true AND (missing = '')", Error(MissingAttribute)),
            ("missing * 5", Error(MissingAttribute)),
            ("1 / missing", Error(MissingAttribute)),
        ],
    );
}

/// §3.4.1 unary operators.
#[test]
fn unary_operators() {
    check(
        "unary operators",
        &[
            ("NOT TRUE", Bool(false)),
            ("not false", Bool(true)),
            ("NOT NOT TRUE", Bool(true)),
            ("NOT 0", Bool(true)),
            ("NOT 'true'", Bool(false)),
            ("NOT 'yes'", Error(Cast)),
            ("NOT flag", Bool(false)),
            ("-5", Int(-5)),
            ("- 5", Int(-5)),
            ("-(5)", Int(-5)),
            ("-sequence", Int(-10)),
            ("-negative", Int(7)),
            ("-FALSE", Int(0)),
            ("-'abc'", Error(Cast)),
            ("-(-2147483648)", Error(Math)),
            ("-(2147483647)", Int(-2147483647)),
            ("+'5'", Error(Parse)),
            ("NOT", Error(Parse)),
            ("-", Error(Parse)),
        ],
    );
}

/// §3.4.2 binary arithmetic, with §3.7 casts to Integer.
#[test]
fn arithmetic() {
    check(
        "arithmetic",
        &[
            ("1 + 2", Int(3)),
            ("1+2", Int(3)),
            ("5-3", Int(2)),
            ("5 -3", Int(2)),
            ("5 - -3", Int(8)),
            ("7 / 2", Int(3)),
            ("-7 / 2", Int(-3)),
            ("7 / -2", Int(-3)),
            ("7 % 3", Int(1)),
            ("-7 % 3", Int(-1)),
            ("7 % -3", Int(1)),
            ("-2147483648 % -1", Int(0)),
            ("-2147483648 / -1", Error(Math)),
            ("2147483647 + 1", Error(Math)),
            ("-2147483648 - 1", Error(Math)),
            ("65536 * 65536", Error(Math)),
            ("1 / 0", Error(Math)),
            ("1 % 0", Error(Math)),
            ("sequence + 1", Int(11)),
            ("sequence * negative", Int(-70)),
            ("myint - TRUE", Int(41)),
            ("'1' + '2'", Int(3)),
            ("'+1' + 1", Int(2)),
            ("' 1' + 1", Error(Cast)),
            ("'1.5' + 1", Error(Cast)),
            ("'2147483648' + 0", Error(Cast)),
            ("word + 1", Error(Cast)),
            ("1 + missing", Error(MissingAttribute)),
            ("missing + 'abc'", Error(MissingAttribute)),
            ("'abc' + missing", Error(MissingAttribute)),
        ],
    );
}

/// §3.4.2 comparisons, with the §3.7 rule for ambiguous `=`/`!=`/`<>`: the left operand is
/// cast to the right operand's type; `<` and friends cast both to Integer.
#[test]
fn comparisons_and_implicit_casts() {
    check(
        "comparisons",
        &[
            ("'abc' = 'abc'", Bool(true)),
            ("'abc' = 'ABC'", Bool(false)),
            ("'abc' != 'ABC'", Bool(true)),
            ("'abc' <> 'abc'", Bool(false)),
            ("sequence = 10", Bool(true)),
            ("10 = sequence", Bool(true)),
            ("sequence = '10'", Bool(true)),
            ("'010' = 10", Bool(true)),
            ("10 = '010'", Bool(false)),
            ("word = 10", Error(Cast)),
            ("10 = word", Bool(false)),
            ("TRUE = 'true'", Bool(true)),
            ("TRUE = 'TRUE'", Bool(false)),
            ("'TRUE' = TRUE", Bool(true)),
            ("'yes' = TRUE", Error(Cast)),
            ("TRUE = 1", Bool(true)),
            ("FALSE = 0", Bool(true)),
            ("1 = TRUE", Bool(true)),
            ("5 = TRUE", Bool(true)),
            ("0 = TRUE", Bool(false)),
            ("mybool = 'true'", Bool(true)),
            ("mybool = TRUE", Bool(true)),
            ("myint = '42'", Bool(true)),
            ("myint = '042'", Bool(false)),
            ("myint = 42", Bool(true)),
            ("flag = TRUE", Bool(true)),
            ("TRUE = FALSE = FALSE", Bool(true)),
            ("1 < 2", Bool(true)),
            ("2 <= 2", Bool(true)),
            ("3 > 2", Bool(true)),
            ("2 >= 3", Bool(false)),
            ("'9' < '10'", Bool(true)),
            ("sequence > negative", Bool(true)),
            ("TRUE > FALSE", Bool(true)),
            ("'abc' < 1", Error(Cast)),
            ("1 < 'abc'", Error(Cast)),
            ("1 < 2 = TRUE", Bool(true)),
            ("missing = 1", Error(MissingAttribute)),
            ("1 = missing", Error(MissingAttribute)),
            ("type == 'a'", Error(Parse)),
            ("1 =", Error(Parse)),
        ],
    );
}

/// §3.4.2 logical operators: casts to Boolean, short circuit of AND and OR.
#[test]
fn logical_operators() {
    check(
        "logical operators",
        &[
            ("TRUE AND TRUE", Bool(true)),
            ("TRUE and FALSE", Bool(false)),
            ("FALSE OR TRUE", Bool(true)),
            ("FALSE or FALSE", Bool(false)),
            ("TRUE XOR TRUE", Bool(false)),
            ("TRUE xor FALSE", Bool(true)),
            ("TRUE XOR TRUE XOR TRUE", Bool(true)),
            ("1 AND 'true'", Bool(true)),
            ("0 OR 'FALSE'", Bool(false)),
            ("'abc' AND TRUE", Error(Cast)),
            ("TRUE AND 'abc'", Error(Cast)),
            ("FALSE AND 'abc'", Bool(false)),
            ("TRUE OR 'abc'", Bool(true)),
            ("FALSE AND missing", Bool(false)),
            ("TRUE OR missing", Bool(true)),
            ("TRUE AND missing", Error(MissingAttribute)),
            ("FALSE OR missing", Error(MissingAttribute)),
            ("FALSE XOR missing", Error(MissingAttribute)),
            ("FALSE AND 1 / 0 = 1 AND missing", Bool(false)),
            ("TRUE AND", Error(Parse)),
            ("AND TRUE", Error(Parse)),
        ],
    );
}

/// §3.6 precedence and associativity.
#[test]
fn precedence() {
    check(
        "precedence",
        &[
            ("1 + 2 * 3", Int(7)),
            ("(1 + 2) * 3", Int(9)),
            ("1 - 2 - 3", Int(-4)),
            ("12 / 2 / 3", Int(2)),
            ("2 * 3 % 4", Int(2)),
            ("-2 * 3", Int(-6)),
            ("- 2 + 3", Int(1)),
            ("1 + 2 = 3", Bool(true)),
            ("3 = 1 + 2", Bool(true)),
            ("1 < 2 AND 2 < 3", Bool(true)),
            // Unary NOT binds tighter than comparisons: (NOT TRUE) = FALSE.
            ("NOT TRUE = FALSE", Bool(true)),
            ("NOT (TRUE = FALSE)", Bool(true)),
            ("NOT 1 = 2", Bool(false)),
            // AND, OR and XOR share one level, left to right (§3.6).
            ("TRUE OR FALSE AND FALSE", Bool(false)),
            ("TRUE OR (FALSE AND FALSE)", Bool(true)),
            ("FALSE AND FALSE OR TRUE", Bool(true)),
            ("TRUE XOR TRUE AND FALSE", Bool(false)),
            ("FALSE AND TRUE XOR TRUE", Bool(true)),
            // LIKE and IN bind tighter than the binary operators.
            ("2 * 3 LIKE '3'", Int(2)),
            ("'6' = 2 * 3 LIKE '3'", Bool(false)),
            ("1 + 2 IN (2)", Int(2)),
            ("NOT word LIKE 'h%'", Error(Cast)),
            ("word NOT LIKE 'h%' OR TRUE", Bool(true)),
            ("NOT EXISTS missing AND EXISTS id", Bool(true)),
            ("LENGTH('ab') * 2", Int(4)),
            ("-LENGTH('ab')", Int(-2)),
            ("((((1))))", Int(1)),
            ("(1", Error(Parse)),
            ("1)", Error(Parse)),
            ("()", Error(Parse)),
        ],
    );
}

/// §3.4.3 LIKE.
#[test]
fn like() {
    check(
        "like",
        &[
            ("source LIKE '/orders/%'", Bool(true)),
            ("source LIKE '/ORDERS/%'", Bool(false)),
            ("source like '%/42'", Bool(true)),
            ("source LIKE '%eu%'", Bool(true)),
            ("source LIKE '/orders/__/42'", Bool(true)),
            ("source LIKE '/orders/_/42'", Bool(false)),
            ("source NOT LIKE '/orders/%'", Bool(false)),
            ("source not like '/x%'", Bool(true)),
            ("empty LIKE ''", Bool(true)),
            ("empty LIKE '%'", Bool(true)),
            ("empty LIKE '_'", Bool(false)),
            ("'' LIKE '%%'", Bool(true)),
            ("'abc' LIKE ''", Bool(false)),
            ("'ü' LIKE '_'", Bool(true)),
            ("subject LIKE '%Straße%'", Bool(true)),
            ("percent LIKE '100\\%'", Bool(true)),
            ("'1000' LIKE '100\\%'", Bool(false)),
            ("'a_c' LIKE 'a\\_c'", Bool(true)),
            ("'abc' LIKE 'a\\_c'", Bool(false)),
            ("backslash LIKE 'a\\b'", Bool(true)),
            ("backslash LIKE 'a\\\\b'", Bool(true)),
            ("backslash LIKE 'a\\\\%'", Bool(true)),
            // A literal cannot end in a lone backslash (`\'` is an escaped quote).
            (r"'a\\' LIKE 'a\\\\'", Bool(true)),
            (r"'a\\' LIKE 'a\\'", Bool(false)),
            ("'_b%' LIKE '\\_b\\%'", Bool(true)),
            ("'aaa' LIKE '%a%a%a%'", Bool(true)),
            ("'aa' LIKE '%a%a%a%'", Bool(false)),
            ("'mississippi' LIKE '%iss%ipp%'", Bool(true)),
            ("'mississippi' LIKE 'm%ss_ppi'", Bool(true)),
            ("12345 LIKE '1%5'", Bool(true)),
            ("-5 LIKE '-%'", Bool(true)),
            ("mybool LIKE 'tr__'", Bool(true)),
            ("myint LIKE '4_'", Bool(true)),
            ("missing LIKE '%'", Error(MissingAttribute)),
            ("word LIKE \"h%\"", Bool(true)),
            ("word LIKE word", Error(Parse)),
            ("word LIKE 1", Error(Parse)),
            ("word LIKE CONCAT('h', '%')", Error(Parse)),
            ("word LIKE", Error(Parse)),
            ("word NOT", Error(Parse)),
            ("word NOT = 'x'", Error(Parse)),
        ],
    );
}

/// §3.4.4 EXISTS.
#[test]
fn exists() {
    check(
        "exists",
        &[
            ("EXISTS id", Bool(true)),
            ("EXISTS specversion", Bool(true)),
            ("exists subject", Bool(true)),
            ("EXISTS Subject", Bool(true)),
            ("EXISTS mybool", Bool(true)),
            ("EXISTS missing", Bool(false)),
            ("EXISTS datacontenttype", Bool(false)),
            ("NOT EXISTS missing", Bool(true)),
            ("EXISTS empty", Bool(true)),
            ("EXISTS", Error(Parse)),
            ("EXISTS 'id'", Error(Parse)),
            ("EXISTS (id)", Error(Parse)),
            ("EXISTS and", Error(Parse)),
            ("EXISTS my_ext", Error(Parse)),
        ],
    );
}

/// §3.4.5 IN, with the left operand's type as the target type of the elements.
#[test]
fn in_operator() {
    check(
        "in",
        &[
            ("'a' IN ('a', 'b')", Bool(true)),
            ("'c' IN ('a', 'b')", Bool(false)),
            ("'c' NOT IN ('a', 'b')", Bool(true)),
            ("'a' not in ('a')", Bool(false)),
            ("type IN ('x', 'com.example.order.created')", Bool(true)),
            ("sequence IN (10, 11)", Bool(true)),
            ("sequence IN ('010')", Bool(false)),
            ("10 IN ('010')", Bool(true)),
            ("myint IN (41, 42)", Bool(true)),
            ("myint IN ('42')", Bool(true)),
            ("myint IN ('x')", Error(Cast)),
            ("TRUE IN (0, 5)", Bool(true)),
            ("TRUE IN ('true')", Bool(true)),
            ("mybool IN ('TRUE')", Bool(true)),
            ("1 IN (1, 1 / 0)", Error(Math)),
            ("1 IN (2, missing)", Error(MissingAttribute)),
            ("missing IN (1)", Error(MissingAttribute)),
            ("1 + 1 IN (1 + 1)", Int(1)),
            ("(1 + 1) IN (1 + 1)", Bool(true)),
            ("LENGTH(word) IN (5)", Bool(true)),
            ("'a' IN ()", Error(Parse)),
            ("'a' IN 'a'", Error(Parse)),
            ("'a' IN ('a',)", Error(Parse)),
            ("'a' IN ('a'", Error(Parse)),
        ],
    );
}

/// §3.5.1 string functions.
#[test]
fn string_functions() {
    check(
        "string functions",
        &[
            ("LENGTH(word)", Int(5)),
            ("length('Straße')", Int(6)),
            ("LENGTH(myint)", Int(2)),
            ("LENGTH(missing)", Error(MissingAttribute)),
            ("LENGTH()", Error(MissingFunction)),
            ("LENGTH('a', 'b')", Error(MissingFunction)),
            ("CONCAT()", Str("")),
            ("CONCAT(word, '-', myint, '-', mybool)", Str("hello-42-true")),
            ("concat('a', missing)", Error(MissingAttribute)),
            ("CONCAT_WS('/', 'a', 'b')", Str("a/b")),
            ("Concat_Ws('', 'a', 'b')", Str("ab")),
            ("CONCAT_WS(1, 2, 3)", Str("213")),
            ("CONCAT_WS('-')", Str("")),
            ("CONCAT_WS()", Error(MissingFunction)),
            ("LOWER('ABC')", Str("abc")),
            ("LOWER('ÀÉÎ')", Str("àéî")),
            ("LOWER(TRUE)", Str("true")),
            ("UPPER('straße')", Str("STRASSE")),
            ("UPPER(1)", Str("1")),
            ("UPPER()", Error(MissingFunction)),
            ("TRIM(subject)", Str("Ünïcode Straße")),
            ("TRIM('\t a \n')", Str("a")),
            ("TRIM('\u{a0}\u{2003}a\u{3000}')", Str("a")),
            ("TRIM('\u{1}a\u{1}')", Str("\u{1}a\u{1}")),
            ("TRIM('')", Str("")),
            ("LEFT('abc', 0)", Str("")),
            ("LEFT('Straße', 5)", Str("Straß")),
            ("LEFT('abc', '2')", Str("ab")),
            ("LEFT('abc', 'x')", Error(Cast)),
            ("LEFT('abc', -1)", Error(FunctionEvaluation)),
            ("LEFT('abc')", Error(MissingFunction)),
            ("RIGHT('abc', 0)", Str("")),
            ("RIGHT('Straße', 2)", Str("ße")),
            ("RIGHT('abc', -1)", Error(FunctionEvaluation)),
            ("SUBSTRING('abcdef', 6)", Str("f")),
            ("SUBSTRING('abcdef', 7)", Error(FunctionEvaluation)),
            ("SUBSTRING('abcdef', -6)", Str("abcdef")),
            ("SUBSTRING('abcdef', -7)", Error(FunctionEvaluation)),
            ("SUBSTRING('abcdef', 3, 0)", Str("")),
            ("SUBSTRING('abcdef', 3, 100)", Str("cdef")),
            ("SUBSTRING('abcdef', 3, 2147483647)", Str("cdef")),
            ("SUBSTRING('abcdef', -2, 1)", Str("e")),
            ("SUBSTRING('abcdef', 2, -1)", Error(FunctionEvaluation)),
            ("SUBSTRING('abcdef', 0, -1)", Error(FunctionEvaluation)),
            ("SUBSTRING('', 0)", Str("")),
            ("SUBSTRING('', 1)", Error(FunctionEvaluation)),
            ("SUBSTRING('Straße', 5, 1)", Str("ß")),
            ("SUBSTRING('abc', 'x')", Error(Cast)),
            ("SUBSTRING('abc')", Error(MissingFunction)),
            ("SUBSTRING('abc', 1, 1, 1)", Error(MissingFunction)),
        ],
    );
}

/// §3.5.2 math function and the casting functions.
#[test]
fn math_and_casting_functions() {
    check(
        "math and casting functions",
        &[
            ("ABS(-5)", Int(5)),
            ("abs(5)", Int(5)),
            ("ABS(negative)", Int(7)),
            ("ABS('-3')", Int(3)),
            ("ABS('x')", Error(Cast)),
            ("ABS(-2147483648)", Error(Math)),
            ("ABS(-2147483647)", Int(2147483647)),
            ("ABS()", Error(MissingFunction)),
            ("INT('42')", Int(42)),
            ("INT('+42')", Int(42)),
            ("INT(sequence) + 1", Int(11)),
            ("INT('4x')", Error(Cast)),
            ("INT('')", Error(Cast)),
            ("INT('2147483648')", Error(Cast)),
            ("BOOL('true')", Bool(true)),
            ("BOOL('False')", Bool(false)),
            ("BOOL(flag)", Bool(true)),
            ("BOOL('1')", Error(Cast)),
            ("BOOL('')", Error(Cast)),
            ("STRING(myint)", Str("42")),
            ("STRING(-2147483648)", Str("-2147483648")),
            ("STRING(mybool)", Str("true")),
            ("IS_INT('12')", Bool(true)),
            ("is_int('-12')", Bool(true)),
            ("IS_INT('1.2')", Bool(false)),
            ("IS_INT(word)", Bool(false)),
            ("IS_INT(5)", Bool(true)),
            ("IS_INT(TRUE)", Bool(true)),
            ("IS_INT(missing)", Error(MissingAttribute)),
            ("IS_BOOL('TRUE')", Bool(true)),
            ("IS_BOOL('yes')", Bool(false)),
            ("IS_BOOL(0)", Bool(true)),
            ("IS_BOOL(FALSE)", Bool(true)),
            ("IS_BOOL()", Error(MissingFunction)),
            ("NO_SUCH_FUNCTION(1)", Error(MissingFunction)),
            ("nosuch()", Error(MissingFunction)),
            ("NOSUCH(missing)", Error(MissingFunction)),
            ("f1(2)", Error(Parse)),
            ("_f(2)", Error(Parse)),
            ("LENGTH(", Error(Parse)),
            ("LENGTH('a',)", Error(Parse)),
            ("LENGTH('a' 'b')", Error(Parse)),
        ],
    );
}

#[test]
fn matches_passes_only_a_boolean_true() {
    // CESQL v1.0 §1.2: a filter passes when the expression yields the Boolean true; a String or
    // an Integer result does not pass, whatever it would cast to.
    let event = event();
    let cases: &[(&str, bool)] = &[
        ("TRUE", true),
        ("FALSE", false),
        ("'true'", false),
        ("'TRUE'", false),
        ("'abc'", false),
        ("1", false),
        ("0", false),
        ("BOOL('true')", true),
        ("NOT 0", true),
        ("flag", false),
        ("mybool", true),
        ("missing", false),
        ("missing = 'x' OR TRUE", false),
        ("TRUE OR missing = 'x'", true),
        ("1 / 0 = 0", false),
        ("NOSUCH()", false),
        ("type = 'com.example.order.created' AND source LIKE '/orders/%' AND EXISTS subject", true),
        ("type = 'com.example.order.created' AND source LIKE '/orders/%' AND EXISTS region", false),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text).unwrap().matches(&event), *want, "{text}");
    }
}

#[test]
fn error_messages_quote_the_bad_value() {
    let event = event();
    let message = |text: &str| parse(text).unwrap().evaluate(&event).unwrap_err().to_string();
    assert_eq!(message("word + 1"), "cast error: cannot cast 'hello' to integer");
    assert_eq!(message("BOOL('maybe')"), "cast error: cannot cast 'maybe' to boolean");
    assert_eq!(message("region = 'eu'"), "missingAttribute error: missing attribute 'region'");
    assert_eq!(message("Nope(1, 2)"), "missingFunction error: no function 'nope' taking 2 arguments");
    assert_eq!(message("LEFT('abc', -2)"), "functionEvaluation error: left: length -2 is negative");
    assert_eq!(message("7 / 0"), "math error: 7 / 0 divides by zero");
    assert_eq!(message("ABS(-2147483648)"), "math error: abs(-2147483648) overflows a 32-bit integer");
    let kinds = [Parse, Math, Cast, MissingAttribute, MissingFunction, FunctionEvaluation, Generic];
    let names: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        ["parse", "math", "cast", "missingAttribute", "missingFunction", "functionEvaluation", "generic"]
    );
}

#[test]
fn parse_error_positions() {
    let cases: &[(&str, usize, &str)] = &[
        ("type = ", 7, "unexpected end of expression"),
        ("type == 'a'", 6, "unexpected '='"),
        ("", 0, "unexpected end of expression"),
        ("   ", 3, "unexpected end of expression"),
        ("(1", 2, "expected ')', found end of expression"),
        ("1 + ", 4, "unexpected end of expression"),
        ("1 2", 2, "unexpected '2'"),
        ("'abc", 0, "unterminated string literal"),
        ("x = 'é' AND é", 12, "unexpected character 'é'"),
        ("a ! b", 2, "unexpected character '!'"),
        ("a LIKE b", 7, "the pattern of like must be a string literal, found 'b'"),
        ("a NOT b", 6, "expected 'like' or 'in' after 'not', found 'b'"),
        ("EXISTS 1", 7, "expected an attribute name after 'exists', found '1'"),
        ("my_attr = 1", 0, "invalid attribute name 'my_attr'"),
        ("f1(2)", 0, "invalid function name 'f1'"),
        ("x = 2147483648", 4, "integer literal '2147483648' is out of the 32-bit range"),
        ("x IN ()", 6, "unexpected ')'"),
        ("x IN 1", 5, "expected '(' to open the set of in, found '1'"),
        ("LENGTH('a' 'b')", 11, "expected ',' or ')' in the arguments, found ''b''"),
        ("TRUE AND AND", 9, "unexpected 'AND'"),
        ("type = 'a' )", 11, "unexpected ')'"),
    ];
    for (text, position, message) in cases {
        let error = parse(text).unwrap_err();
        assert_eq!((error.position, error.message.as_str()), (*position, *message), "{text}");
        assert_eq!(error.to_string(), format!("at position {position}: {message}"));
    }
}

#[test]
fn nesting_is_bounded_without_panicking() {
    let deep_parens = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&deep_parens).unwrap_err().message.contains("nests deeper"));
    let deep_not = format!("{}TRUE", "NOT ".repeat(10_000));
    assert!(parse(&deep_not).is_err());
    let deep_minus = format!("{}1", "-".repeat(10_000));
    assert!(parse(&deep_minus).is_err());
    let long_sum = vec!["1"; 10_000].join(" + ");
    assert!(parse(&long_sum).is_err());
    // Long chains of one logical operator stay shallow, whatever their length.
    let long_or = (0..5_000).map(|i| format!("id = 'x{i}'")).collect::<Vec<_>>().join(" OR ");
    let expression = parse(&long_or).unwrap();
    assert!(!expression.matches(&event()));
    let modest = format!("{}1{}", "(".repeat(50), ")".repeat(50));
    assert_eq!(parse(&modest).unwrap().evaluate(&event()), Ok(Value::Integer(1)));
}
