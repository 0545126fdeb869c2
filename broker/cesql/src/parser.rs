//! The CESQL grammar (CESQL §2) compiled into a tree, with the precedence of CESQL §3.6.
//!
//! Precedence, tightest first (§3.6):
//! 1. function invocations (and literals, identifiers, `EXISTS`, parenthesised expressions)
//! 2. unary `NOT`, unary `-`
//! 3. `LIKE`, `IN` (postfix, after a unary operand)
//! 4. `*` `/` `%`
//! 5. `+` `-`
//! 6. `=` `!=` `<>` `>=` `<=` `>` `<`
//! 7. `AND` `OR` `XOR`: one level, evaluated left to right, as §3.6 lists them together.
//!
//! Binary levels are left-associative ("left to right when the precedence is equal").

use crate::functions::{self, Function};
use crate::lexer::{lex, Kind, Token};
use crate::like::Pattern;
use crate::{ParseError, Value};

/// The deepest tree (and the deepest nesting of parentheses, unary operators and calls) that
/// `parse` accepts, so that neither parsing nor evaluation can exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// The longest text `parse` accepts, in bytes.
pub(crate) const MAX_EXPRESSION_BYTES: usize = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl ArithOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Rem => "%",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    /// `=`
    Eq,
    /// `!=` and `<>`
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicOp {
    And,
    Or,
    Xor,
}

/// A compiled expression node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Literal(Value),
    /// A context attribute or extension, by its lower-cased name.
    Attribute(Box<str>),
    Exists(Box<str>),
    Not(Box<Node>),
    Negate(Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    Compare(CmpOp, Box<Node>, Box<Node>),
    /// A left-nested chain of one logical operator, flattened: two or more operands.
    Logic(LogicOp, Vec<Node>),
    Like {
        value: Box<Node>,
        pattern: Pattern,
        negated: bool,
    },
    In {
        value: Box<Node>,
        set: Box<[Node]>,
        negated: bool,
    },
    Call {
        function: Function,
        args: Box<[Node]>,
    },
    /// An invocation no built-in function matches (name as written, lower-cased).
    MissingFunction {
        name: Box<str>,
        arity: usize,
    },
}

impl Node {
    /// `name = 'literal'` (either way round): the attribute must hold exactly that string.
    pub(crate) fn attribute_equals_string(&self) -> Option<(&str, &str)> {
        match self {
            Node::Compare(CmpOp::Eq, left, right) => match (&**left, &**right) {
                (Node::Attribute(name), Node::Literal(Value::String(literal)))
                | (Node::Literal(Value::String(literal)), Node::Attribute(name)) => Some((name, literal)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the node's value is a Boolean whenever evaluation succeeds, whatever its
    /// operands (logical operators, NOT, comparisons, LIKE, IN, EXISTS).
    pub(crate) fn yields_boolean(&self) -> bool {
        matches!(
            self,
            Node::Logic(..)
                | Node::Not(_)
                | Node::Compare(..)
                | Node::Like { .. }
                | Node::In { .. }
                | Node::Exists(_)
                | Node::Literal(Value::Boolean(_))
        )
    }
}

/// Parses `text` into a tree.
pub(crate) fn parse(text: &str) -> Result<Node, ParseError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(ParseError {
            position: 0,
            message: format!(
                "the expression has {} bytes, above the limit of {MAX_EXPRESSION_BYTES} (cesql expression length)",
                text.len()
            ),
        });
    }
    let tokens = lex(text)?;
    let mut parser = Parser { tokens, next: 0, nesting: 0 };
    let (node, _) = parser.expression()?;
    let token = parser.peek();
    if token.kind != Kind::End {
        return Err(parser.unexpected(parser.next));
    }
    Ok(node)
}

/// A node and the depth of the tree under it.
type Parsed = (Node, usize);

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    next: usize,
    /// Current recursion depth of `unary`, which every cycle of the recursion (parentheses,
    /// unary operators, arguments, sets) passes through.
    nesting: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token<'a> {
        self.peek_at(self.next)
    }

    fn peek_at(&self, index: usize) -> &Token<'a> {
        // The lexer always ends with `End`; past it, keep answering `End`.
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[index.min(last)]
    }

    fn bump(&mut self) -> Token<'a> {
        let token = self.peek().clone();
        if token.kind != Kind::End {
            self.next += 1;
        }
        token
    }

    fn error(position: usize, message: String) -> ParseError {
        ParseError { position, message }
    }

    /// "unexpected …" for the token at `index`.
    fn unexpected(&self, index: usize) -> ParseError {
        let token = self.peek_at(index);
        match token.kind {
            Kind::End => Self::error(token.position, "unexpected end of expression".to_owned()),
            _ => Self::error(token.position, format!("unexpected '{}'", token.text)),
        }
    }

    fn expect(&mut self, kind: Kind, what: &str) -> Result<Token<'a>, ParseError> {
        if self.peek().kind == kind {
            return Ok(self.bump());
        }
        let token = self.peek();
        let found = match token.kind {
            Kind::End => "end of expression".to_owned(),
            _ => format!("'{}'", token.text),
        };
        Err(Self::error(token.position, format!("expected {what}, found {found}")))
    }

    fn check_depth(position: usize, depth: usize) -> Result<(), ParseError> {
        if depth > MAX_DEPTH {
            return Err(Self::error(
                position,
                format!("expression nests deeper than {MAX_DEPTH} levels (cesql nesting limit)"),
            ));
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.nesting += 1;
        Self::check_depth(self.peek().position, self.nesting)
    }

    /// `expression` (CESQL §2.1): the loosest level, the logical operators.
    fn expression(&mut self) -> Result<Parsed, ParseError> {
        self.logic()
    }

    fn logic(&mut self) -> Result<Parsed, ParseError> {
        let (mut node, mut depth) = self.comparison()?;
        loop {
            let token = self.peek();
            let op = if token.is_keyword("AND") {
                LogicOp::And
            } else if token.is_keyword("OR") {
                LogicOp::Or
            } else if token.is_keyword("XOR") {
                LogicOp::Xor
            } else {
                return Ok((node, depth));
            };
            let position = token.position;
            self.bump();
            let (right, right_depth) = self.comparison()?;
            node = match node {
                Node::Logic(current, mut operands) if current == op => {
                    operands.push(right);
                    depth = depth.max(right_depth + 1);
                    Node::Logic(op, operands)
                }
                left => {
                    depth = depth.max(right_depth) + 1;
                    Node::Logic(op, vec![left, right])
                }
            };
            Self::check_depth(position, depth)?;
        }
    }

    fn comparison(&mut self) -> Result<Parsed, ParseError> {
        let (mut node, mut depth) = self.additive()?;
        loop {
            let op = match self.peek().kind {
                Kind::Equal => CmpOp::Eq,
                Kind::NotEqual | Kind::LessGreater => CmpOp::NotEq,
                Kind::Less => CmpOp::Lt,
                Kind::LessEqual => CmpOp::Le,
                Kind::Greater => CmpOp::Gt,
                Kind::GreaterEqual => CmpOp::Ge,
                _ => return Ok((node, depth)),
            };
            let position = self.bump().position;
            let (right, right_depth) = self.additive()?;
            depth = depth.max(right_depth) + 1;
            Self::check_depth(position, depth)?;
            node = Node::Compare(op, Box::new(node), Box::new(right));
        }
    }

    fn additive(&mut self) -> Result<Parsed, ParseError> {
        let (mut node, mut depth) = self.multiplicative()?;
        loop {
            let op = match self.peek().kind {
                Kind::Plus => ArithOp::Add,
                Kind::Minus => ArithOp::Sub,
                _ => return Ok((node, depth)),
            };
            let position = self.bump().position;
            let (right, right_depth) = self.multiplicative()?;
            depth = depth.max(right_depth) + 1;
            Self::check_depth(position, depth)?;
            node = Node::Arith(op, Box::new(node), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Parsed, ParseError> {
        let (mut node, mut depth) = self.postfix()?;
        loop {
            let op = match self.peek().kind {
                Kind::Star => ArithOp::Mul,
                Kind::Slash => ArithOp::Div,
                Kind::Percent => ArithOp::Rem,
                _ => return Ok((node, depth)),
            };
            let position = self.bump().position;
            let (right, right_depth) = self.postfix()?;
            depth = depth.max(right_depth) + 1;
            Self::check_depth(position, depth)?;
            node = Node::Arith(op, Box::new(node), Box::new(right));
        }
    }

    /// `x [NOT] LIKE 'pattern'` and `x [NOT] IN (y1, …)` (CESQL §2.3), binding tighter than
    /// every binary operator and looser than the unary ones (§3.6).
    fn postfix(&mut self) -> Result<Parsed, ParseError> {
        let (mut node, mut depth) = self.unary()?;
        loop {
            let token = self.peek();
            let position = token.position;
            let negated = token.is_keyword("NOT");
            let operator = if negated { self.peek_at(self.next + 1) } else { token };
            let is_like = operator.is_keyword("LIKE");
            if !is_like && !operator.is_keyword("IN") {
                if negated {
                    let operator = operator.clone();
                    let found = match operator.kind {
                        Kind::End => "end of expression".to_owned(),
                        _ => format!("'{}'", operator.text),
                    };
                    return Err(Self::error(
                        operator.position,
                        format!("expected 'like' or 'in' after 'not', found {found}"),
                    ));
                }
                return Ok((node, depth));
            }
            self.next += if negated { 2 } else { 1 };
            if is_like {
                // CESQL §3.4.3: the pattern MUST be a string literal, or it is a parse error.
                let token = self.bump();
                let Kind::String(pattern) = &token.kind else {
                    let found = match token.kind {
                        Kind::End => "end of expression".to_owned(),
                        _ => format!("'{}'", token.text),
                    };
                    return Err(Self::error(
                        token.position,
                        format!("the pattern of like must be a string literal, found {found}"),
                    ));
                };
                let pattern = Pattern::compile(pattern).map_err(|message| Self::error(token.position, message))?;
                node = Node::Like { value: Box::new(node), pattern, negated };
                depth += 1;
            } else {
                // CESQL §2.3 `set-expression ::= "(" expression ("," expression)* ")"`.
                self.expect(Kind::LParen, "'(' to open the set of in")?;
                let mut set = Vec::new();
                loop {
                    let (element, element_depth) = self.expression()?;
                    depth = depth.max(element_depth);
                    set.push(element);
                    if self.peek().kind == Kind::Comma {
                        self.bump();
                        continue;
                    }
                    self.expect(Kind::RParen, "',' or ')' in the set of in")?;
                    break;
                }
                node = Node::In { value: Box::new(node), set: set.into(), negated };
                depth += 1;
            }
            Self::check_depth(position, depth)?;
        }
    }

    /// Unary `NOT` and `-` (CESQL §3.4.1), and signed integer literals (§2.2
    /// `integer-literal ::= ('+' | '-')? digit+`): a sign directly before digits is part of the
    /// literal, so `-2147483648` is valid.
    fn unary(&mut self) -> Result<Parsed, ParseError> {
        self.enter()?;
        let result = self.unary_inner();
        self.nesting -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Parsed, ParseError> {
        let token = self.peek().clone();
        let signed_literal =
            matches!(token.kind, Kind::Minus | Kind::Plus) && self.peek_at(self.next + 1).kind == Kind::Integer;
        if signed_literal {
            self.bump();
            let digits = self.bump();
            let text = format!("{}{}", token.text, digits.text);
            return Ok((Node::Literal(Value::Integer(Self::integer(&text, token.position)?)), 1));
        }
        if token.is_keyword("NOT") {
            self.bump();
            let (operand, depth) = self.unary()?;
            return Ok((Node::Not(Box::new(operand)), depth + 1));
        }
        if token.kind == Kind::Minus {
            self.bump();
            let (operand, depth) = self.unary()?;
            return Ok((Node::Negate(Box::new(operand)), depth + 1));
        }
        self.primary()
    }

    fn integer(text: &str, position: usize) -> Result<i32, ParseError> {
        // CESQL §2.2: "Integer literals MUST be valid 32 bit signed integer values."
        text.parse().map_err(|_| Self::error(position, format!("integer literal '{text}' is out of the 32-bit range")))
    }

    fn primary(&mut self) -> Result<Parsed, ParseError> {
        let token = self.peek().clone();
        match &token.kind {
            Kind::Integer => {
                self.bump();
                Ok((Node::Literal(Value::Integer(Self::integer(token.text, token.position)?)), 1))
            }
            Kind::String(value) => {
                self.bump();
                Ok((Node::Literal(Value::String(value.clone())), 1))
            }
            Kind::LParen => {
                self.bump();
                let parsed = self.expression()?;
                self.expect(Kind::RParen, "')'")?;
                Ok(parsed)
            }
            Kind::Word => self.word(token),
            _ => Err(self.unexpected(self.next)),
        }
    }

    /// A boolean literal, `EXISTS identifier`, a function invocation or an attribute.
    fn word(&mut self, token: Token<'a>) -> Result<Parsed, ParseError> {
        if token.is_keyword("TRUE") || token.is_keyword("FALSE") {
            self.bump();
            return Ok((Node::Literal(Value::Boolean(token.is_keyword("TRUE"))), 1));
        }
        if token.is_keyword("EXISTS") {
            self.bump();
            let name = self.peek().clone();
            if name.kind != Kind::Word || is_keyword(name.text) {
                let found = match name.kind {
                    Kind::End => "end of expression".to_owned(),
                    _ => format!("'{}'", name.text),
                };
                return Err(Self::error(
                    name.position,
                    format!("expected an attribute name after 'exists', found {found}"),
                ));
            }
            self.bump();
            return Ok((Node::Exists(Self::identifier(&name)?), 1));
        }
        if is_keyword(token.text) {
            return Err(self.unexpected(self.next));
        }
        if self.peek_at(self.next + 1).kind == Kind::LParen {
            return self.invocation(token);
        }
        self.bump();
        Ok((Node::Attribute(Self::identifier(&token)?), 1))
    }

    /// CESQL §2.2 `value-identifier ::= (lowercase-char | digit)+`, with letters of any case
    /// accepted and lower-cased, as keywords are case-insensitive.
    fn identifier(token: &Token<'_>) -> Result<Box<str>, ParseError> {
        if !token.text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Self::error(token.position, format!("invalid attribute name '{}'", token.text)));
        }
        Ok(token.text.to_ascii_lowercase().into_boxed_str())
    }

    /// CESQL §2.4 `function-identifier "(" argument-list? ")"`, with
    /// `function-identifier ::= char ("_" | char)*`.
    fn invocation(&mut self, name: Token<'a>) -> Result<Parsed, ParseError> {
        let valid = name.text.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && name.text.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_');
        if !valid {
            return Err(Self::error(name.position, format!("invalid function name '{}'", name.text)));
        }
        self.bump();
        self.bump(); // `(`
        let mut args = Vec::new();
        let mut depth = 0;
        if self.peek().kind == Kind::RParen {
            self.bump();
        } else {
            loop {
                let (arg, arg_depth) = self.expression()?;
                depth = depth.max(arg_depth);
                args.push(arg);
                if self.peek().kind == Kind::Comma {
                    self.bump();
                    continue;
                }
                self.expect(Kind::RParen, "',' or ')' in the arguments")?;
                break;
            }
        }
        let node = match functions::resolve(name.text, args.len()) {
            Some(function) => Node::Call { function, args: args.into() },
            None => Node::MissingFunction { name: name.text.to_ascii_lowercase().into(), arity: args.len() },
        };
        Ok((node, depth + 1))
    }
}

/// The reserved words of CESQL §2.3 and §2.2.
fn is_keyword(word: &str) -> bool {
    ["AND", "OR", "XOR", "NOT", "LIKE", "EXISTS", "IN", "TRUE", "FALSE"].iter().any(|k| word.eq_ignore_ascii_case(k))
}
