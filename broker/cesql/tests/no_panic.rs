//! `parse`, `evaluate` and `matches` never panic, whatever the input.

use proptest::prelude::*;
use switchyard_cesql::{parse, Value};
use switchyard_event::{AttrValue, Event};

fn event() -> Event {
    let s = |v: &str| AttrValue::String(v.to_owned());
    Event::new(
        vec![
            ("specversion".into(), s("1.0")),
            ("id".into(), s("1")),
            ("source".into(), s("/src/é")),
            ("type".into(), s("t")),
            ("subject".into(), s("  ")),
            ("num".into(), s("-2147483648")),
            ("flag".into(), AttrValue::Bool(false)),
            ("count".into(), AttrValue::Integer(i32::MIN)),
        ],
        None,
    )
    .unwrap()
}

/// Fragments of CESQL, so that random sequences often parse and reach evaluation.
const VOCABULARY: &[&str] = &[
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "AND",
    "or",
    "XOR",
    "NOT",
    "LIKE",
    "IN",
    "EXISTS",
    "TRUE",
    "false",
    "0",
    "1",
    "-1",
    "2147483647",
    "2147483648",
    "-2147483648",
    "''",
    "'%'",
    "'_'",
    "'a\\%'",
    "'\\'",
    "'é'",
    "\"x\"",
    "'TRUE'",
    "'12'",
    "id",
    "source",
    "subject",
    "num",
    "flag",
    "count",
    "missing",
    "LENGTH(",
    "CONCAT(",
    "CONCAT_WS(",
    "LOWER(",
    "UPPER(",
    "TRIM(",
    "LEFT(",
    "RIGHT(",
    "SUBSTRING(",
    "ABS(",
    "INT(",
    "BOOL(",
    "STRING(",
    "IS_INT(",
    "IS_BOOL(",
    "NOPE(",
    "é",
    "_",
    "\\",
    "'/src/%'",
    "'t'",
    "'1'",
    "'false'",
];

fn exercise(text: &str) {
    let event = event();
    if let Ok(expression) = parse(text) {
        // `matches` takes shortcuts; it must agree with `evaluate`: only a Boolean true passes.
        let truthy = matches!(expression.evaluate(&event), Ok(Value::Boolean(true)));
        assert_eq!(expression.matches(&event), truthy, "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_text(text in any::<String>()) {
        exercise(&text);
    }

    #[test]
    fn token_soup(tokens in proptest::collection::vec(proptest::sample::select(VOCABULARY), 0..24)) {
        exercise(&tokens.join(" "));
        exercise(&tokens.concat());
    }
}
