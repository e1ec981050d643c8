//! YAML loading with errors that point at `file:line:col`, name the field and say what was expected.
//!
//! serde_yaml is unmaintained upstream, so it stays behind this module: nothing else in the
//! workspace names it. Positions come from serde_yaml's own marks; the trick that makes them exact
//! is that every check runs *inside* a visitor, where serde_yaml attaches the node's mark to the
//! error. Semantic checks that run after deserialization find their node again with [`locate`].

use std::cell::RefCell;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::interpolate::{self, Resolved};

thread_local! {
    /// The environment values a document refers to, resolved by the caller before parsing, so
    /// that [`Text`] can interpolate while serde drives it (serde gives visitors no context).
    static VARIABLES: RefCell<Resolved> = const { RefCell::new(Resolved::new()) };
}

/// Deserializes `text` (the contents of `file`) into `T`, interpolating `${VAR}` in every [`Text`]
/// value through `env`. The only error is a located diagnostic: serde stops at the first problem.
pub(crate) fn load<T: DeserializeOwned>(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, Diagnostics> {
    load_redacting(file, text, env).map(|(value, _)| value)
}

/// [`load`], and a [`Redactor`] for the environment values the document refers to.
pub(crate) fn load_redacting<T: DeserializeOwned>(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(T, crate::Redactor), Diagnostics> {
    let resolved: Resolved = interpolate::referenced_names(text)
        .into_iter()
        .map(|name| {
            let value = env(&name);
            (name, value)
        })
        .collect();
    let redactor = crate::Redactor::new(
        resolved
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.as_deref()?))),
    );
    let previous = VARIABLES.with(|cell| cell.replace(resolved));
    let result = T::deserialize(serde_yaml::Deserializer::from_str(text));
    VARIABLES.with(|cell| cell.replace(previous));
    result
        .map(|value| (value, redactor))
        .map_err(|error| Diagnostics::from(diagnostic_from_yaml(file, text, &error)))
}

/// One step of a path into a YAML document, as semantic checks name the node they complain about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

impl From<&str> for PathSegment {
    fn from(key: &str) -> Self {
        PathSegment::Key(key.to_owned())
    }
}

impl From<usize> for PathSegment {
    fn from(index: usize) -> Self {
        PathSegment::Index(index)
    }
}

/// Renders a path the way serde_yaml does (`a.b[2].c`), so every diagnostic reads the same.
pub fn display_path(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathSegment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Finds the line and column (1-based) of the node at `path`, or of its nearest existing parent.
pub fn locate(text: &str, path: &[PathSegment]) -> (usize, usize) {
    for depth in (0..=path.len()).rev() {
        let seed = Locate {
            path: &path[..depth],
        };
        if let Err(error) = seed.deserialize(serde_yaml::Deserializer::from_str(text))
            && error.to_string().contains(LOCATED)
            && let Some(location) = error.location()
        {
            return (location.line(), location.column());
        }
    }
    (1, 1)
}

/// A semantic error at `path`, located in `text`.
pub fn diagnostic_at(
    file: &str,
    text: &str,
    path: &[PathSegment],
    message: impl Into<String>,
) -> Diagnostic {
    let (line, column) = locate(text, path);
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        field: display_path(path),
        message: message.into(),
    }
}

const LOCATED: &str = "\u{1}sunset-located\u{1}";

struct Locate<'p> {
    path: &'p [PathSegment],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(de::Error::custom(LOCATED));
        }
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            let matches = match (&self.path[0], &key) {
                (PathSegment::Key(wanted), serde_yaml::Value::String(found)) => wanted == found,
                (PathSegment::Key(wanted), other) => {
                    serde_yaml::to_string(other).is_ok_and(|s| s.trim() == wanted)
                }
                (PathSegment::Index(_), _) => false,
            };
            if matches {
                return map.next_value_seed(Locate {
                    path: &self.path[1..],
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(de::Error::custom(LOCATED));
        }
        let mut index = 0;
        loop {
            let found = if self.path[0] == PathSegment::Index(index) {
                seq.next_element_seed(Locate {
                    path: &self.path[1..],
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(drop)
            };
            if found.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Locate<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(LOCATED))
        } else {
            Ok(())
        }
    }
}

fn diagnostic_from_yaml(file: &str, text: &str, error: &serde_yaml::Error) -> Diagnostic {
    let (line, column) = match error.location() {
        Some(location) => (location.line(), location.column()),
        None => (text.lines().count().max(1), 1),
    };
    let mut message = error.to_string();
    if let Some(location) = error.location() {
        // The position leads the diagnostic already; libyaml's syntax errors repeat it inside.
        let position = format!(" at line {} column {}", location.line(), location.column());
        if let Some(stripped) = message.strip_suffix(&position) {
            message = stripped.to_owned();
        }
        message = message.replacen(&format!("{position},"), "", 1);
    }
    let (field, message) = split_yaml_path(&message);
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        field,
        message: with_suggestion(&message),
    }
}

/// serde_yaml prefixes messages with the path of the node (`a.b[0]: ...`) unless it is the root.
/// Every message serde or this crate writes starts with several words, so a first token without
/// whitespace followed by `: ` is that path.
fn split_yaml_path(message: &str) -> (String, String) {
    match message.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (path.to_owned(), rest.to_owned())
        }
        _ => (String::new(), message.to_owned()),
    }
}

/// Adds "did you mean" to serde's unknown field and unknown variant messages: a typo'd key in a
/// teardown sequence must be caught and corrected, not silently ignored.
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message.to_owned();
    };
    let Some((found, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(found, &candidates) {
        Some(best) => format!("{message} (did you mean `{best}`?)"),
        None => message.to_owned(),
    }
}

/// The candidate within a small edit distance of `found`, if one is clearly meant.
pub fn closest<'c>(found: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let limit = (found.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|candidate| (edit_distance(found, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Interpolates one scalar with the variables `load` resolved for this document. Called from
/// visitors only, so that an unset variable is reported at the scalar's own position.
fn interpolated<E: de::Error>(value: &str) -> Result<String, E> {
    VARIABLES
        .with(|vars| interpolate::interpolate(value, &vars.borrow()))
        .map_err(E::custom)
}

/// A string value from a plan, with `${VAR}` interpolated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Text, E> {
        interpolated(value).map(Text)
    }

    // Unquoted YAML scalars like `42` or `true` are still names to an operator (a Name tag of
    // `42`), so they are accepted as text instead of failing with a type error.
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }
}

/// A duration written as `24h`, `90s`, `1h30m` or `200ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationValue(pub std::time::Duration);

impl Serialize for DurationValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Canonical as milliseconds, so `90s` and `1m30s` fingerprint the same.
        serializer.serialize_u128(self.0.as_millis())
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = DurationValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration like `90s`, `1h30m` or `200ms`")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<DurationValue, E> {
        let value = interpolated(value)?;
        crate::duration::parse_duration(&value)
            .map(DurationValue)
            .map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<DurationValue, E> {
        self.visit_str(&value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<DurationValue, E> {
        self.visit_str(&value.to_string())
    }
}

/// A finite number (`0.01`, `5`, or `${VAR}` holding one). Compared by value, so plan types that
/// hold one can still be `Eq`.
#[derive(Debug, Clone, Copy, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Number(pub f64);

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Number {}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

impl Visitor<'_> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number like `0.01` or `5`")
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Number, E> {
        if value.is_finite() {
            Ok(Number(value))
        } else {
            Err(E::custom(format_args!(
                "expected a finite number, found `{value}`"
            )))
        }
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "plan numbers are thresholds, far below 2^52"
    )]
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Number, E> {
        Ok(Number(value as f64))
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "plan numbers are thresholds, far below 2^52"
    )]
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Number, E> {
        Ok(Number(value as f64))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Number, E> {
        let value = interpolated::<E>(value)?;
        match value.trim().parse::<f64>() {
            Ok(number) => self.visit_f64(number),
            Err(_) => Err(E::custom(format_args!(
                "expected a number like `0.01` or `5`, found `{value}`"
            ))),
        }
    }
}

/// A YAML mapping whose order is meaningful (the steps of a sequence run in the order written)
/// and whose duplicate keys are an error instead of a silent overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(Text, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = (&Text, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A sequence of pairs: the order is part of the meaning, so it is part of the fingerprint.
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(Text, V)> = Vec::new();
                while let Some(key) = map.next_key_seed(UniqueKey { seen: &entries })? {
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// Deserializes a mapping key, refusing one already seen. The check runs inside the key's own
/// visitor so that the error points at the duplicate, not at the start of the mapping.
struct UniqueKey<'a, V> {
    seen: &'a [(Text, V)],
}

impl<'de, V> DeserializeSeed<'de> for UniqueKey<'_, V> {
    type Value = Text;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Text, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<V> Visitor<'_> for UniqueKey<'_, V> {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a unique key")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Text, E> {
        self.unique(TextVisitor.visit_str(value)?)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Text, E> {
        self.unique(TextVisitor.visit_u64(value)?)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Text, E> {
        self.unique(TextVisitor.visit_i64(value)?)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Text, E> {
        self.unique(TextVisitor.visit_bool(value)?)
    }
}

impl<V> UniqueKey<'_, V> {
    fn unique<E: de::Error>(&self, key: Text) -> Result<Text, E> {
        if self.seen.iter().any(|(existing, _)| existing == &key) {
            return Err(E::custom(format_args!("duplicate key `{key}`")));
        }
        Ok(key)
    }
}
