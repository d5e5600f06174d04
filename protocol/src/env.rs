//! How both sidecars read their environment: an empty value counts as unset, and every
//! error names its variable.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

pub struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// `lookup` is `std::env::var` in production and a map in tests.
    pub fn new(lookup: F) -> Self {
        Env { lookup }
    }

    /// The variable's value, if set and not empty.
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
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
    }
}
