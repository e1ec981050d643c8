//! The metric language of the cutover gates: metric name patterns with label matchers
//! (`pg_stat_database_tup_*{datname="app"}`), and the arithmetic of `derived` metrics
//! (`blks_hit / (blks_hit + blks_read)`). Parsed when a sequence loads, so a typo is a located
//! error before anything runs, and by the engine to build the PromQL it sends.

/// A metric name pattern (`*` any run of characters, `?` one) and the label matchers every
/// series it names must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricPattern {
    pub glob: String,
    pub matchers: Vec<Matcher>,
}

/// One PromQL label matcher, its value kept as written (quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: &'static str,
    pub value: String,
}

impl MetricPattern {
    pub fn parse(text: &str) -> Result<MetricPattern, String> {
        let text = text.trim();
        let (glob, rest) = match text.find('{') {
            Some(at) => (&text[..at], &text[at..]),
            None => (text, ""),
        };
        let glob = glob.trim();
        if glob.is_empty() {
            return Err(format!(
                "`{text}` has no metric name before its label matchers"
            ));
        }
        if let Some(bad) = glob
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '*' | '?')))
        {
            return Err(format!(
                "`{glob}` is not a metric name pattern: `{bad}` is neither a metric name character (letters, digits, `_`, `:`) nor `*` or `?`"
            ));
        }
        if glob.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "`{glob}` is not a metric name pattern: a metric name does not start with a digit"
            ));
        }
        let matchers = if rest.is_empty() {
            Vec::new()
        } else {
            parse_selector(rest)?
        };
        Ok(MetricPattern {
            glob: glob.to_owned(),
            matchers,
        })
    }

    /// Whether `name` is one of the metrics the pattern names.
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(self.glob.as_bytes(), name.as_bytes())
    }

    /// `name{matchers, extra}`: one metric of the pattern, with a side's own matchers.
    pub fn selector(&self, name: &str, extra: &[Matcher]) -> String {
        selector(name, self.matchers.iter().chain(extra))
    }
}

/// `name{a="b",c=~"d"}` (or `name` alone).
pub fn selector<'m>(name: &str, matchers: impl IntoIterator<Item = &'m Matcher>) -> String {
    let matchers: Vec<String> = matchers
        .into_iter()
        .map(|m| format!("{}{}{}", m.label, m.op, m.value))
        .collect();
    if matchers.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", matchers.join(","))
    }
}

fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_matches(&pattern[1..], name)
                || (!name.is_empty() && glob_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// A label name as Prometheus spells them.
pub fn is_label_name(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `{label="value", label=~"regex", ...}`: PromQL's label matchers.
pub fn parse_selector(text: &str) -> Result<Vec<Matcher>, String> {
    let fail = |what: &str| Err(format!("`{text}` is not a list of label matchers: {what}"));
    let Some(inner) = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
    else {
        return fail("expected `{label=\"value\", ...}`");
    };
    let mut matchers = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let label_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let label = &rest[..label_end];
        if !is_label_name(label) {
            return fail("expected a label name");
        }
        rest = rest[label_end..].trim_start();
        let Some(op) = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
        else {
            return fail(&format!("expected `=`, `!=`, `=~` or `!~` after `{label}`"));
        };
        rest = rest[op.len()..].trim_start();
        let Some(quote) = rest.chars().next().filter(|c| matches!(c, '"' | '\'')) else {
            return fail(&format!("expected a quoted value for `{label}`"));
        };
        let mut end = None;
        let mut escaped = false;
        for (at, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                c if c == quote => {
                    end = Some(at);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return fail(&format!("the value of `{label}` has no closing quote"));
        };
        matchers.push(Matcher {
            label: label.to_owned(),
            op,
            value: rest[..=end].to_owned(),
        });
        rest = rest[end + 1..].trim_start();
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => {}
            None => return fail("expected `,` between matchers"),
        }
    }
    Ok(matchers)
}

/// The arithmetic of a derived metric: metric names, numbers, `+ - * /` and parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedExpr {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    Number(String),
    Op(char),
}

impl DerivedExpr {
    pub fn parse(text: &str) -> Result<DerivedExpr, String> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens: &tokens,
            at: 0,
        };
        parser
            .expression()
            .map_err(|what| format!("`{text}` is not arithmetic over metric names: {what}"))?;
        if parser.at != tokens.len() {
            return Err(format!(
                "`{text}` is not arithmetic over metric names: unexpected `{}`",
                render_token(&tokens[parser.at])
            ));
        }
        Ok(DerivedExpr { tokens })
    }

    /// The metric names it reads, each once, in order of appearance.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for token in &self.tokens {
            if let Token::Name(name) = token
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }

    /// The expression as PromQL, each metric name replaced by what `resolve` makes of it.
    pub fn render(&self, resolve: impl Fn(&str) -> String) -> String {
        self.tokens
            .iter()
            .map(|token| match token {
                Token::Name(name) => resolve(name),
                other => render_token(other),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn render_token(token: &Token) -> String {
    match token {
        Token::Name(text) | Token::Number(text) => text.clone(),
        Token::Op(c) => c.to_string(),
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        let start = at;
        if c.is_whitespace() {
            at += 1;
        } else if matches!(c, '+' | '-' | '*' | '/' | '(' | ')') {
            tokens.push(Token::Op(c));
            at += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            while at < chars.len()
                && (chars[at].is_ascii_alphanumeric() || matches!(chars[at], '_' | ':'))
            {
                at += 1;
            }
            tokens.push(Token::Name(chars[start..at].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            while at < chars.len() && (chars[at].is_ascii_digit() || chars[at] == '.') {
                at += 1;
            }
            let number: String = chars[start..at].iter().collect();
            if number.parse::<f64>().is_err() {
                return Err(format!("`{number}` in `{text}` is not a number"));
            }
            tokens.push(Token::Number(number));
        } else {
            return Err(format!(
                "`{text}` is not arithmetic over metric names: `{c}` is not a metric name, a number, `+ - * /` or a parenthesis"
            ));
        }
    }
    Ok(tokens)
}

/// Recursive descent over `expression := term (('+'|'-') term)*`, `term := factor (('*'|'/')
/// factor)*`, `factor := name | number | '(' expression ')' | '-' factor`.
struct Parser<'t> {
    tokens: &'t [Token],
    at: usize,
}

impl Parser<'_> {
    fn expression(&mut self) -> Result<(), String> {
        self.term()?;
        while matches!(self.tokens.get(self.at), Some(Token::Op('+' | '-'))) {
            self.at += 1;
            self.term()?;
        }
        Ok(())
    }

    fn term(&mut self) -> Result<(), String> {
        self.factor()?;
        while matches!(self.tokens.get(self.at), Some(Token::Op('*' | '/'))) {
            self.at += 1;
            self.factor()?;
        }
        Ok(())
    }

    fn factor(&mut self) -> Result<(), String> {
        let token = self.tokens.get(self.at);
        self.at += 1;
        match token {
            Some(Token::Name(_) | Token::Number(_)) => Ok(()),
            Some(Token::Op('-')) => self.factor(),
            Some(Token::Op('(')) => {
                self.expression()?;
                match self.tokens.get(self.at) {
                    Some(Token::Op(')')) => {
                        self.at += 1;
                        Ok(())
                    }
                    _ => Err("a `(` is not closed".to_owned()),
                }
            }
            Some(other) => Err(format!(
                "expected a metric name, a number or `(`, found `{}`",
                render_token(other)
            )),
            None => Err("it ends where a metric name or a number was expected".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_metrics_by_glob_and_keep_their_matchers() {
        let pattern =
            MetricPattern::parse(r#"pg_stat_database_tup_*{datname="app", mode=~'a|b'}"#).unwrap();
        assert!(pattern.matches("pg_stat_database_tup_fetched"));
        assert!(!pattern.matches("pg_stat_database_blks_hit"));
        assert!(
            MetricPattern::parse("pg_?ocks_count")
                .unwrap()
                .matches("pg_locks_count")
        );
        let side = parse_selector(r#"{collector="legacy"}"#).unwrap();
        assert_eq!(
            pattern.selector("pg_stat_database_tup_fetched", &side),
            r#"pg_stat_database_tup_fetched{datname="app",mode=~'a|b',collector="legacy"}"#
        );
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (text, expected) in [
            ("pg_stat[x]", "`[` is neither a metric name character"),
            ("{datname=\"x\"}", "has no metric name"),
            ("1pg", "does not start with a digit"),
            (
                "pg{datname}",
                "expected `=`, `!=`, `=~` or `!~` after `datname`",
            ),
            ("pg{datname=\"x}", "has no closing quote"),
            ("pg{datname=x}", "expected a quoted value for `datname`"),
            ("pg{a=\"1\" b=\"2\"}", "expected `,` between matchers"),
            ("pg{a=\"1\"", "expected `{label=\"value\", ...}`"),
        ] {
            let error = MetricPattern::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn derived_metrics_are_arithmetic_over_names() {
        let expr = DerivedExpr::parse("blks_hit / (blks_hit + blks_read) * 100").unwrap();
        assert_eq!(expr.names(), ["blks_hit", "blks_read"]);
        assert_eq!(
            expr.render(|name| format!("pg_{name}")),
            "pg_blks_hit / ( pg_blks_hit + pg_blks_read ) * 100"
        );
        for (text, expected) in [
            ("blks_hit / (blks_hit + blks_read", "a `(` is not closed"),
            ("blks_hit /", "it ends where"),
            ("rate(x[5m])", "`[` is not a metric name"),
            ("a b", "unexpected `b`"),
            ("1..2", "`1..2` in `1..2` is not a number"),
        ] {
            let error = DerivedExpr::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
