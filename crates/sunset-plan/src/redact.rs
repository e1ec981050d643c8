//! Keeps values that came from the environment out of files and output. A sequence may carry a
//! token in `${HOOK_TOKEN}`; whatever a runner writes (audit lines, checkpoint texts, plans,
//! error messages) passes through [`Redactor::redact`], which puts the template back.

/// Values shorter than this are left alone: `${ENV}` = `dev` would otherwise rewrite every
/// word that contains it, and such short values are not secrets.
const MIN_SECRET_LEN: usize = 4;

/// The environment values a plan interpolated, each with the `${NAME}` it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// Longest value first, so a value containing another is replaced whole.
    pairs: Vec<(String, String)>,
}

impl Redactor {
    pub fn new<'a>(variables: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut pairs: Vec<(String, String)> = variables
            .into_iter()
            .filter(|(_, value)| value.len() >= MIN_SECRET_LEN)
            .map(|(name, value)| (value.to_owned(), format!("${{{name}}}")))
            .collect();
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Redactor { pairs }
    }

    /// `text` with every interpolated value replaced by its `${NAME}`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (value, template) in &self.pairs {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), template);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_their_templates_again() {
        let redactor = Redactor::new([
            ("HOOK_TOKEN", "s3cr3t-t0ken"),
            ("ENV", "dev"),
            ("PREFIX", "s3cr3t"),
        ]);
        assert_eq!(
            redactor.redact("POST http://hooks/?token=s3cr3t-t0ken&env=dev (s3cr3t)"),
            "POST http://hooks/?token=${HOOK_TOKEN}&env=dev (${PREFIX})"
        );
        assert!(Redactor::new([("ENV", "dev")]).is_empty());
    }
}
