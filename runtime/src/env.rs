//! How both sidecars read their environment: an empty value counts as unset, every
//! error names its variable, durations are converted here once, and variables renamed
//! to the `QUANTAID_` scheme are still read under their old names for one release.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// Variables renamed to the `QUANTAID_` scheme, with the name each had before. The old
/// name is read, for one release, when the new one is unset; [`warn_deprecated`] names
/// the ones a deployment still sets at start-up.
pub const RENAMED: &[(&str, &str)] = &[
    ("QUANTAID_DB_HOST", "DB_HOST"),
    ("QUANTAID_DB_PASSWORD", "DB_PASSWORD"),
    ("QUANTAID_REDIS_HOST", "REDIS_HOST"),
    ("QUANTAID_REDIS_PASSWORD", "REDIS_PASSWORD"),
];

fn old_name(name: &str) -> Option<&'static str> {
    RENAMED.iter().find(|(new, _)| *new == name).map(|(_, old)| *old)
}

/// One line per old name still set: to use instead, or ignored beside the new one.
pub fn deprecation_notices(lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let set = |name: &str| lookup(name).is_some_and(|v| !v.is_empty());
    RENAMED
        .iter()
        .filter(|(_, old)| set(old))
        .map(|(new, old)| {
            if set(new) {
                format!("{old} is ignored: {new} is set; remove {old}")
            } else {
                format!("{old} is deprecated and will stop working in the next release; rename it to {new}")
            }
        })
        .collect()
}

/// Logs [`deprecation_notices`] for the process environment (once logging is set up).
pub fn warn_deprecated() {
    for notice in deprecation_notices(|name| std::env::var(name).ok()) {
        tracing::warn!("{notice}");
    }
}

pub struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// `lookup` is `std::env::var` in production and a map in tests.
    pub fn new(lookup: F) -> Self {
        Env { lookup }
    }

    /// The variable's value, if set and not empty; for a renamed variable that is unset,
    /// the value under its old name.
    pub fn raw(&self, name: &str) -> Option<String> {
        let set = |name: &str| (self.lookup)(name).filter(|v| !v.is_empty());
        set(name).or_else(|| old_name(name).and_then(set))
    }

    pub fn get(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_string())
    }

    pub fn parse<T: FromStr>(&self, name: &str, default: &str) -> anyhow::Result<T>
    where
        T::Err: Display,
    {
        let raw = self.get(name, default);
        raw.trim().parse::<T>().map_err(|e| anyhow::anyhow!("{name}={raw:?}: {e}"))
    }

    pub fn secs(&self, name: &str, default: &str) -> anyhow::Result<Duration> {
        Ok(Duration::from_secs(self.parse(name, default)?))
    }

    pub fn millis(&self, name: &str, default: &str) -> anyhow::Result<Duration> {
        Ok(Duration::from_millis(self.parse(name, default)?))
    }

    /// Seconds as a calendar duration (for timestamps), refused when out of range
    /// rather than replaced by a default where it is used.
    pub fn delta_secs(&self, name: &str, default: &str) -> anyhow::Result<chrono::TimeDelta> {
        let secs: i64 = self.parse(name, default)?;
        chrono::TimeDelta::try_seconds(secs)
            .filter(|d| *d >= chrono::TimeDelta::zero())
            .ok_or_else(|| anyhow::anyhow!("{name}={secs}: out of range"))
    }

    /// Whether any of `names` is set.
    pub fn any_set(&self, names: &[&str]) -> bool {
        names.iter().any(|name| self.raw(name).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_unset_and_errors_name_the_variable() {
        let env = Env::new(|name: &str| match name {
            "EMPTY" => Some(String::new()),
            "BAD" => Some("soon".into()),
            "GOOD" => Some(" 250 ".into()),
            _ => None,
        });
        assert_eq!(env.get("EMPTY", "d"), "d");
        assert_eq!(env.millis("GOOD", "1").unwrap(), Duration::from_millis(250));
        let err = env.secs("BAD", "1").unwrap_err().to_string();
        assert!(err.contains("BAD=\"soon\""), "{err}");
        assert!(env.any_set(&["NOPE", "GOOD"]) && !env.any_set(&["EMPTY"]));
        assert_eq!(env.delta_secs("GOOD", "1").unwrap(), chrono::TimeDelta::seconds(250));
        assert!(env.delta_secs("HUGE", "9223372036854775807").unwrap_err().to_string().contains("HUGE"));
        assert!(env.delta_secs("NEGATIVE", "-1").is_err());
    }

    #[test]
    fn renamed_variables_are_read_under_their_old_names_with_a_notice() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let old_only = vars(&[("REDIS_HOST", "old:6379")]);
        assert_eq!(Env::new(&old_only).raw("QUANTAID_REDIS_HOST").as_deref(), Some("old:6379"));
        let notices = deprecation_notices(old_only);
        assert_eq!(notices.len(), 1);
        assert!(notices[0].contains("rename it to QUANTAID_REDIS_HOST"), "{notices:?}");

        let both = vars(&[("REDIS_HOST", "old:6379"), ("QUANTAID_REDIS_HOST", "new:6379")]);
        assert_eq!(Env::new(&both).raw("QUANTAID_REDIS_HOST").as_deref(), Some("new:6379"));
        assert!(deprecation_notices(both)[0].contains("REDIS_HOST is ignored"));

        let current = vars(&[("QUANTAID_DB_PASSWORD", "x")]);
        assert!(deprecation_notices(current).is_empty());
        // Only the new name reads the old one, not the reverse.
        assert_eq!(Env::new(&vars(&[("QUANTAID_DB_HOST", "h")])).raw("DB_HOST"), None);
    }
}
