//! Tokens of CESQL (CESQL §2, and the lexer grammar `CESQLLexer.g4` beside the spec).

use crate::ParseError;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    LParen,
    RParen,
    Comma,
    Star,
    Slash,
    Percent,
    Plus,
    Minus,
    Equal,
    /// `!=`
    NotEqual,
    /// `<>`
    LessGreater,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    /// Only digits; the sign, if any, is a separate `Plus`/`Minus` token.
    Integer,
    /// A string literal, with its quote escapes resolved.
    String(String),
    /// A run of ASCII letters, digits and underscores that is not only digits: a keyword, a
    /// function name or an attribute identifier; the parser decides.
    Word,
    End,
}

/// A token and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Token<'a> {
    pub(crate) kind: Kind,
    /// 0-based character offset of the token's first character.
    pub(crate) position: usize,
    /// The token's source text.
    pub(crate) text: &'a str,
}

impl Token<'_> {
    /// True when this is the keyword `keyword` (given in uppercase), in any case.
    pub(crate) fn is_keyword(&self, keyword: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(keyword)
    }
}

/// Splits `text` into tokens, ending with `Kind::End`.
pub(crate) fn lex(text: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let mut lexer = Lexer { text, byte: 0, position: 0 };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let end = token.kind == Kind::End;
        tokens.push(token);
        if end {
            return Ok(tokens);
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    byte: usize,
    /// Character offset of the next character.
    position: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.text.get(self.byte..).and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.byte += c.len_utf8();
        self.position += 1;
        Some(c)
    }

    fn next_token(&mut self) -> Result<Token<'a>, ParseError> {
        // CESQLLexer.g4: `SPACE: [ \t\r\n]+ -> skip`.
        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\n')) {
            self.bump();
        }
        let (start_byte, position) = (self.byte, self.position);
        let Some(c) = self.bump() else {
            return Ok(Token { kind: Kind::End, position, text: "" });
        };
        let kind = match c {
            '(' => Kind::LParen,
            ')' => Kind::RParen,
            ',' => Kind::Comma,
            '*' => Kind::Star,
            '/' => Kind::Slash,
            '%' => Kind::Percent,
            '+' => Kind::Plus,
            '-' => Kind::Minus,
            '=' => Kind::Equal,
            '!' if self.peek() == Some('=') => {
                self.bump();
                Kind::NotEqual
            }
            '<' => match self.peek() {
                Some('>') => {
                    self.bump();
                    Kind::LessGreater
                }
                Some('=') => {
                    self.bump();
                    Kind::LessEqual
                }
                _ => Kind::Less,
            },
            '>' if self.peek() == Some('=') => {
                self.bump();
                Kind::GreaterEqual
            }
            '>' => Kind::Greater,
            '\'' | '"' => Kind::String(self.string_literal(c, position)?),
            c if c.is_ascii_alphanumeric() || c == '_' => {
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
                    self.bump();
                }
                let word = &self.text[start_byte..self.byte];
                if word.bytes().all(|b| b.is_ascii_digit()) {
                    Kind::Integer
                } else {
                    Kind::Word
                }
            }
            other => {
                return Err(ParseError { position, message: format!("unexpected character '{other}'") });
            }
        };
        Ok(Token { kind, position, text: &self.text[start_byte..self.byte] })
    }

    /// CESQL §2.2: `'…'` or `"…"`. A backslash followed by the delimiter, or the delimiter
    /// doubled (`CESQLLexer.g4`), stands for the delimiter. Any other backslash is kept with the
    /// character after it, so `LIKE` patterns keep their `\%` and `\_` escapes.
    fn string_literal(&mut self, quote: char, position: usize) -> Result<String, ParseError> {
        let unterminated = || ParseError { position, message: "unterminated string literal".to_owned() };
        let mut value = String::new();
        loop {
            match self.bump() {
                None => return Err(unterminated()),
                Some('\\') => match self.bump() {
                    None => return Err(unterminated()),
                    Some(c) if c == quote => value.push(quote),
                    Some(c) => {
                        value.push('\\');
                        value.push(c);
                    }
                },
                Some(c) if c == quote => {
                    if self.peek() == Some(quote) {
                        self.bump();
                        value.push(quote);
                    } else {
                        return Ok(value);
                    }
                }
                Some(c) => value.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        lex(text).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn operators_and_words() {
        assert_eq!(
            kinds("a<>b!=c<=d>=e<f>g=h"),
            vec![
                Kind::Word,
                Kind::LessGreater,
                Kind::Word,
                Kind::NotEqual,
                Kind::Word,
                Kind::LessEqual,
                Kind::Word,
                Kind::GreaterEqual,
                Kind::Word,
                Kind::Less,
                Kind::Word,
                Kind::Greater,
                Kind::Word,
                Kind::Equal,
                Kind::Word,
                Kind::End
            ]
        );
        assert_eq!(kinds("12 1a CONCAT_WS"), vec![Kind::Integer, Kind::Word, Kind::Word, Kind::End]);
    }

    #[test]
    fn string_escapes() {
        assert_eq!(kinds(r"'a\'b'"), vec![Kind::String("a'b".into()), Kind::End]);
        assert_eq!(kinds(r"'a''b'"), vec![Kind::String("a'b".into()), Kind::End]);
        assert_eq!(kinds(r#""a\"b""#), vec![Kind::String("a\"b".into()), Kind::End]);
        assert_eq!(kinds(r"'a\%b\\'"), vec![Kind::String(r"a\%b\\".into()), Kind::End]);
        assert_eq!(kinds(r#"'a"b'"#), vec![Kind::String("a\"b".into()), Kind::End]);
    }

    #[test]
    fn positions_are_characters() {
        let tokens = lex("'é' = x").unwrap();
        assert_eq!(tokens[1].position, 4);
        assert_eq!(tokens[2].position, 6);
        let err = lex("'é' ! x").unwrap_err();
        assert_eq!((err.position, err.message.as_str()), (4, "unexpected character '!'"));
        let err = lex("x = 'abc").unwrap_err();
        assert_eq!((err.position, err.message.as_str()), (4, "unterminated string literal"));
    }
}
