//! `LIKE` patterns (CESQL §3.4.3), compiled once at parse time and matched in time linear in
//! the value, whatever the pattern.
//!
//! A pattern is a sequence of segments separated by `%`. The first segment must match at the
//! start of the value and the last at its end; each segment in between is matched at its
//! leftmost occurrence after the previous one. Leftmost is always right: every segment has a
//! fixed length in characters, so an earlier occurrence leaves at least as much room for the
//! segments after it. Each search resumes where the previous one ended, so the value is read
//! about once: a segment without `_` is found with `str::find` (two-way search, linear), a
//! segment with `_` by a bit-parallel shift-and automaton, in O(n × ⌈m / 64⌉) for a segment of
//! m characters.

use std::collections::BTreeMap;

/// The longest `LIKE` pattern `parse` accepts, in characters: it bounds the shift-and state
/// to [`MAX_WORDS`] machine words per character of the value.
pub(crate) const MAX_PATTERN_CHARS: usize = 256;

/// Words of shift-and state a segment of [`MAX_PATTERN_CHARS`] characters needs.
const MAX_WORDS: usize = MAX_PATTERN_CHARS.div_ceil(64);

/// One pattern element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
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
    /// Anything else (boxed: it is large, and parser frames hold nodes by value).
    General(Box<General>),
}

/// A pattern with `_`, or with `%` between literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct General {
    /// Matches at the start of the value.
    first: Segment,
    /// Matched leftmost, in order, between `first` and `last`.
    middle: Box<[Segment]>,
    /// Matches at the end of the value; `None` when the pattern has no `%`, and `first` must
    /// then match the whole value.
    last: Option<Segment>,
    /// Words of shift-and state per character of the value, for the cost estimate.
    words: usize,
}

/// The elements between two `%`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Characters only.
    Literal(Box<str>),
    /// Characters and `_`.
    Wild(Wild),
}

/// A segment with `_`: its elements, and the shift-and tables that find it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wild {
    /// `Char` and `One` only; at most [`MAX_PATTERN_CHARS`].
    elements: Box<[Element]>,
    /// For each ASCII character, the positions it may take (bit `i` of word `i / 64`).
    ascii: Box<[[u64; MAX_WORDS]; 128]>,
    /// The same for the other characters of the segment.
    other: BTreeMap<char, [u64; MAX_WORDS]>,
    /// The positions any character may take: those of `_`.
    any: [u64; MAX_WORDS],
}

/// The elements of a pattern literal, as written (`%%` not yet merged).
fn elements_of(text: &str) -> Vec<Element> {
    let mut elements = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        elements.push(match c {
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
        });
    }
    elements
}

impl Pattern {
    /// Compiles the text of a pattern literal.
    ///
    /// `\%`, `\_` and `\\` match `%`, `_` and `\` literally; a backslash before any other
    /// character (or at the end) is itself a literal backslash, so `'ab\c'` matches `ab\c`.
    /// A pattern longer than [`MAX_PATTERN_CHARS`] characters is refused.
    pub(crate) fn compile(text: &str) -> Result<Pattern, String> {
        let length = text.chars().count();
        if length > MAX_PATTERN_CHARS {
            return Err(format!(
                "the pattern of like has {length} characters, above the limit of {MAX_PATTERN_CHARS} (like pattern length)"
            ));
        }
        let mut elements = elements_of(text);
        // `%%` matches what `%` matches.
        elements.dedup_by(|next, previous| *next == Element::Many && *previous == Element::Many);
        Ok(Self::classify(elements))
    }

    fn classify(elements: Vec<Element>) -> Pattern {
        if !elements.contains(&Element::One) {
            let starts = elements.first() == Some(&Element::Many);
            let ends = elements.len() > usize::from(starts) && elements.last() == Some(&Element::Many);
            let inner = &elements[usize::from(starts)..elements.len() - usize::from(ends)];
            if let Some(literal) = literal(inner) {
                return match (starts, ends) {
                    (false, false) => Pattern::Exact(literal),
                    (false, true) => Pattern::Prefix(literal),
                    (true, false) => Pattern::Suffix(literal),
                    (true, true) => Pattern::Contains(literal),
                };
            }
        }
        let mut segments: Vec<Segment> = elements.split(|e| *e == Element::Many).map(Segment::new).collect();
        let words = segments.iter().map(Segment::words).max().unwrap_or(0);
        // `split` yields at least one segment; with a `%`, at least two.
        let last = if segments.len() > 1 { segments.pop() } else { None };
        let mut segments = segments.into_iter();
        let first = segments.next().unwrap_or(Segment::Literal("".into()));
        let middle = segments.filter(|s| !s.is_empty()).collect();
        Pattern::General(Box::new(General { first, middle, last, words }))
    }

    /// True when `value` matches the whole pattern.
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => value == &**s,
            Pattern::Prefix(s) => value.starts_with(&**s),
            Pattern::Suffix(s) => value.ends_with(&**s),
            Pattern::Contains(s) => value.contains(&**s),
            Pattern::General(general) => general.matches(value),
        }
    }

    /// What matching a value of `bytes` bytes costs, in the evaluator's work units (about one
    /// per byte read, times the words of shift-and state).
    pub(crate) fn cost(&self, bytes: usize) -> u64 {
        let words = match self {
            Pattern::General(general) => general.words.max(1),
            _ => 1,
        };
        u64::try_from(bytes).unwrap_or(u64::MAX).saturating_mul(u64::try_from(words).unwrap_or(u64::MAX))
    }
}

fn literal(elements: &[Element]) -> Option<Box<str>> {
    elements
        .iter()
        .map(|e| match e {
            Element::Char(c) => Some(*c),
            _ => None,
        })
        .collect::<Option<String>>()
        .map(String::into_boxed_str)
}

impl General {
    fn matches(&self, value: &str) -> bool {
        let Some(after_first) = self.first.match_start(value) else { return false };
        let rest = &value[after_first..];
        let mut between = match &self.last {
            // No `%`: the first segment is the whole pattern.
            None => return rest.is_empty(),
            Some(last) => match last.match_end(rest) {
                Some(start) => &rest[..start],
                None => return false,
            },
        };
        for segment in self.middle.iter() {
            match segment.find_end(between) {
                Some(end) => between = &between[end..],
                None => return false,
            }
        }
        true
    }
}

impl Segment {
    fn new(elements: &[Element]) -> Segment {
        match literal(elements) {
            Some(literal) => Segment::Literal(literal),
            None => Segment::Wild(Wild::new(elements)),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Segment::Literal(s) if s.is_empty())
    }

    fn words(&self) -> usize {
        match self {
            Segment::Literal(_) => 0,
            Segment::Wild(wild) => wild.elements.len().div_ceil(64),
        }
    }

    /// The byte length of the match at the start of `value`.
    fn match_start(&self, value: &str) -> Option<usize> {
        match self {
            Segment::Literal(s) => value.starts_with(&**s).then_some(s.len()),
            Segment::Wild(wild) => {
                let mut chars = value.char_indices();
                for element in wild.elements.iter() {
                    let (_, c) = chars.next()?;
                    if !element_matches(*element, c) {
                        return None;
                    }
                }
                Some(chars.next().map_or(value.len(), |(at, _)| at))
            }
        }
    }

    /// The byte offset where the match at the end of `value` starts.
    fn match_end(&self, value: &str) -> Option<usize> {
        match self {
            Segment::Literal(s) => value.ends_with(&**s).then(|| value.len() - s.len()),
            Segment::Wild(wild) => {
                let mut chars = value.char_indices().rev();
                let mut start = value.len();
                for element in wild.elements.iter().rev() {
                    let (at, c) = chars.next()?;
                    if !element_matches(*element, c) {
                        return None;
                    }
                    start = at;
                }
                Some(start)
            }
        }
    }

    /// The byte offset just after the leftmost match in `value`.
    fn find_end(&self, value: &str) -> Option<usize> {
        match self {
            Segment::Literal(s) => value.find(&**s).map(|at| at + s.len()),
            Segment::Wild(wild) => wild.find_end(value),
        }
    }
}

fn element_matches(element: Element, c: char) -> bool {
    match element {
        Element::Char(expected) => expected == c,
        Element::One => true,
        Element::Many => false,
    }
}

impl Wild {
    fn new(elements: &[Element]) -> Wild {
        let mut ascii = Box::new([[0u64; MAX_WORDS]; 128]);
        let mut other: BTreeMap<char, [u64; MAX_WORDS]> = BTreeMap::new();
        let mut any = [0u64; MAX_WORDS];
        // `compile` bounds the pattern, so every position has its bit.
        let positions = elements.iter().enumerate().take(MAX_PATTERN_CHARS);
        for (position, element) in positions {
            let (word, bit) = (position / 64, 1u64 << (position % 64));
            match *element {
                Element::Char(c) => match usize::try_from(u32::from(c)).ok().and_then(|i| ascii.get_mut(i)) {
                    Some(mask) => mask[word] |= bit,
                    None => other.entry(c).or_default()[word] |= bit,
                },
                Element::One => any[word] |= bit,
                Element::Many => {}
            }
        }
        // `_` takes any character: fold its positions into every character's mask.
        for mask in ascii.iter_mut().chain(other.values_mut()) {
            for (word, any) in mask.iter_mut().zip(any) {
                *word |= any;
            }
        }
        Wild { elements: elements.iter().copied().take(MAX_PATTERN_CHARS).collect(), ascii, other, any }
    }

    fn mask(&self, c: char) -> &[u64; MAX_WORDS] {
        if c.is_ascii() {
            if let Some(mask) = usize::try_from(u32::from(c)).ok().and_then(|i| self.ascii.get(i)) {
                return mask;
            }
        }
        self.other.get(&c).unwrap_or(&self.any)
    }

    /// Shift-and: bit `i` of the state is set when the last `i + 1` characters read match the
    /// first `i + 1` elements. Every match is as long as the segment, so the first one to end
    /// is also the leftmost.
    fn find_end(&self, value: &str) -> Option<usize> {
        let length = self.elements.len();
        let last = length.checked_sub(1)?;
        let words = length.div_ceil(64);
        let (last_word, last_bit) = (last / 64, 1u64 << (last % 64));
        let mut state = [0u64; MAX_WORDS];
        for (at, c) in value.char_indices() {
            let mask = self.mask(c);
            let mut carry = 1u64;
            for (word, mask) in state.iter_mut().zip(mask).take(words) {
                let shifted = (*word << 1) | carry;
                carry = *word >> 63;
                *word = shifted & mask;
            }
            if state[last_word] & last_bit != 0 {
                return Some(at + c.len_utf8());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compile(text: &str) -> Pattern {
        Pattern::compile(text).unwrap()
    }

    #[test]
    fn shapes() {
        assert_eq!(compile("abc"), Pattern::Exact("abc".into()));
        assert_eq!(compile("abc%"), Pattern::Prefix("abc".into()));
        assert_eq!(compile("%abc"), Pattern::Suffix("abc".into()));
        assert_eq!(compile("%abc%"), Pattern::Contains("abc".into()));
        assert_eq!(compile("%"), Pattern::Suffix("".into()));
        assert_eq!(compile("%%"), Pattern::Suffix("".into()));
        assert_eq!(compile(""), Pattern::Exact("".into()));
        assert_eq!(compile(r"a\%"), Pattern::Exact("a%".into()));
        assert!(matches!(compile("a%b"), Pattern::General(_)));
        assert!(matches!(compile("a_"), Pattern::General(_)));
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
            // The prefix and the suffix must not overlap.
            ("ab%ba", "aba", false),
            ("ab%ba", "abba", true),
            ("a_%_a", "aba", false),
            ("a_%_a", "abba", true),
            ("%a_b%", "xxaéb", true),
            ("%é_%", "aéb", true),
            ("%é_%", "aé", false),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(compile(pattern).matches(value), *expected, "{value} LIKE {pattern}");
        }
    }

    #[test]
    fn the_quadratic_case_of_backtracking_is_linear_and_right() {
        let value = format!("{}b", "a".repeat(80_000));
        let pattern = format!("%{}_b", "a".repeat(200));
        assert!(compile(&pattern).matches(&value));
        let pattern = format!("%{}_c", "a".repeat(200));
        assert!(!compile(&pattern).matches(&value));
        // Segments longer than one word of state.
        let pattern = format!("%{}_{}b", "a".repeat(100), "a".repeat(100));
        assert!(compile(&pattern).matches(&value));
        assert!(!compile(&format!("{pattern}b")).matches(&value));
    }

    #[test]
    fn long_patterns_are_refused_naming_the_limit() {
        assert!(Pattern::compile(&"_".repeat(MAX_PATTERN_CHARS)).is_ok());
        let error = Pattern::compile(&"_".repeat(MAX_PATTERN_CHARS + 1)).unwrap_err();
        assert!(error.contains("257 characters") && error.contains("limit of 256"), "{error}");
    }

    /// The definition, by dynamic programming over (pattern, value) prefixes: only for small
    /// inputs. `table[i][j]`: the first `i` elements match the first `j` characters.
    fn reference(pattern: &[Element], value: &[char]) -> bool {
        let mut table = vec![vec![false; value.len() + 1]; pattern.len() + 1];
        table[0][0] = true;
        for (i, element) in pattern.iter().enumerate() {
            for j in 0..=value.len() {
                table[i + 1][j] = match element {
                    Element::Many => table[i][j] || (j > 0 && table[i + 1][j - 1]),
                    _ => j > 0 && table[i][j - 1] && element_matches(*element, value[j - 1]),
                };
            }
        }
        table[pattern.len()][value.len()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn agrees_with_the_definition(
            pattern in "[ab%_\\\\é]{0,8}",
            value in "[abé\\\\%_]{0,10}",
        ) {
            let chars: Vec<char> = value.chars().collect();
            let expected = reference(&elements_of(&pattern), &chars);
            prop_assert_eq!(compile(&pattern).matches(&value), expected, "{} LIKE {}", value, pattern);
        }

        #[test]
        fn agrees_with_the_definition_across_words(
            head in "[ab]{60,70}",
            tail in "[ab_%]{0,4}",
            value in "[ab]{60,90}",
        ) {
            let pattern = format!("%{head}_{tail}");
            let chars: Vec<char> = value.chars().collect();
            let expected = reference(&elements_of(&pattern), &chars);
            prop_assert_eq!(compile(&pattern).matches(&value), expected, "{} LIKE {}", value, pattern);
        }
    }
}
