//! `LIKE` patterns (CESQL §3.4.3), compiled once at parse time.

/// One pattern element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Element {
    /// Exactly this character (case sensitive).
    Char(char),
    /// `_`: any one character.
    One,
    /// `%`: any run of characters, possibly empty.
    Many,
}

/// A compiled pattern. The common shapes get a direct string operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// No wildcard.
    Exact(Box<str>),
    /// `literal%`
    Prefix(Box<str>),
    /// `%literal`
    Suffix(Box<str>),
    /// `%literal%`
    Contains(Box<str>),
    /// Anything else.
    General(Box<[Element]>),
}

impl Pattern {
    /// Compiles the text of a pattern literal.
    ///
    /// `\%`, `\_` and `\\` match `%`, `_` and `\` literally; a backslash before any other
    /// character (or at the end) is itself a literal backslash, so `'ab\c'` matches `ab\c`.
    pub(crate) fn compile(text: &str) -> Pattern {
        let mut elements = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let element = match c {
                '\\' => match chars.peek() {
                    Some(&next @ ('%' | '_' | '\\')) => {
                        chars.next();
                        Element::Char(next)
                    }
                    _ => Element::Char('\\'),
                },
                '%' => Element::Many,
                '_' => Element::One,
                c => Element::Char(c),
            };
            // `%%` matches what `%` matches.
            if !(element == Element::Many && elements.last() == Some(&Element::Many)) {
                elements.push(element);
            }
        }
        Self::classify(elements)
    }

    fn classify(elements: Vec<Element>) -> Pattern {
        if elements.contains(&Element::One) {
            return Pattern::General(elements.into());
        }
        let literal = |slice: &[Element]| -> Option<Box<str>> {
            slice
                .iter()
                .map(|e| match e {
                    Element::Char(c) => Some(*c),
                    _ => None,
                })
                .collect::<Option<String>>()
                .map(String::into_boxed_str)
        };
        let starts = elements.first() == Some(&Element::Many);
        let ends = elements.len() > usize::from(starts) && elements.last() == Some(&Element::Many);
        let inner = &elements[usize::from(starts)..elements.len() - usize::from(ends)];
        match (starts, ends, literal(inner)) {
            (false, false, Some(s)) => Pattern::Exact(s),
            (false, true, Some(s)) => Pattern::Prefix(s),
            (true, false, Some(s)) => Pattern::Suffix(s),
            (true, true, Some(s)) => Pattern::Contains(s),
            _ => Pattern::General(elements.into()),
        }
    }

    /// True when `value` matches the whole pattern.
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => value == &**s,
            Pattern::Prefix(s) => value.starts_with(&**s),
            Pattern::Suffix(s) => value.ends_with(&**s),
            Pattern::Contains(s) => value.contains(&**s),
            Pattern::General(elements) => general_match(elements, value),
        }
    }
}

/// Wildcard matching with single-star backtracking: linear for patterns with one `%`, and
/// O(pattern × value) at worst, without recursion or allocation.
fn general_match(pattern: &[Element], value: &str) -> bool {
    let next_char = |at: usize| value.get(at..).and_then(|rest| rest.chars().next());
    let (mut p, mut v) = (0usize, 0usize);
    // Where the last `%` was, and the value offset it currently stands for the end of.
    let mut star: Option<(usize, usize)> = None;
    while let Some(c) = next_char(v) {
        match pattern.get(p) {
            Some(Element::Char(expected)) if *expected == c => {
                p += 1;
                v += c.len_utf8();
                continue;
            }
            Some(Element::One) => {
                p += 1;
                v += c.len_utf8();
                continue;
            }
            Some(Element::Many) => {
                p += 1;
                star = Some((p, v));
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `%` absorb one more character, or fail.
        match star {
            Some((star_p, star_v)) => {
                let absorbed = next_char(star_v).map_or(1, char::len_utf8);
                p = star_p;
                v = star_v + absorbed;
                star = Some((star_p, v));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|e| *e == Element::Many)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(Pattern::compile("abc"), Pattern::Exact("abc".into()));
        assert_eq!(Pattern::compile("abc%"), Pattern::Prefix("abc".into()));
        assert_eq!(Pattern::compile("%abc"), Pattern::Suffix("abc".into()));
        assert_eq!(Pattern::compile("%abc%"), Pattern::Contains("abc".into()));
        assert_eq!(Pattern::compile("%"), Pattern::Suffix("".into()));
        assert_eq!(Pattern::compile("%%"), Pattern::Suffix("".into()));
        assert_eq!(Pattern::compile(""), Pattern::Exact("".into()));
        assert_eq!(Pattern::compile(r"a\%"), Pattern::Exact("a%".into()));
        assert!(matches!(Pattern::compile("a%b"), Pattern::General(_)));
        assert!(matches!(Pattern::compile("a_"), Pattern::General(_)));
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("a%b%c", "abc", true),
            ("a%b%c", "azzzbzzzc", true),
            ("a%b%c", "azzzbzzz", false),
            ("_b%", "ab", true),
            ("_b%", "abcd1", true),
            ("_b%", "b", false),
            ("_b%", "aBc", false),
            ("a_c", "aéc", true),
            ("a__c", "aéc", false),
            ("%a%a%a%", "aaa", true),
            ("%a%a%a%", "aa", false),
            ("%ab", "aab", true),
            ("%%", "", true),
            ("%", "", true),
            ("_", "", false),
            (r"a\_b", "a_b", true),
            (r"a\_b", "azb", false),
            (r"a\\%", r"a\xyz", true),
            (r"ab\c", r"ab\c", true),
            (r"ab\", r"ab\", true),
            (".%.%.", ".ab.cde.", true),
            (".%.%.", "ab.cde", false),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(Pattern::compile(pattern).matches(value), *expected, "{value} LIKE {pattern}");
        }
    }
}
