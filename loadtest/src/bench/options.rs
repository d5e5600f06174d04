//! Command-line flags, parsed by hand: a dozen flags do not need a parser crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

pub const USAGE: &str = "\
quantaid-loadtest bench: throughput and latency of the QuantaID identity backend.

Starts PostgreSQL (or uses --database-url) and the release `quantaid-backend` on free
loopback ports, seeds users and an OAuth client, then measures each scenario for a
fixed time with a closed loop of workers.

Options:
  --duration-secs N       measured time per scenario (default 15)
  --warmup-secs N         unmeasured lead-in per scenario (default 2)
  --concurrency C         workers for the token and introspection scenarios (default 32)
  --login-concurrency C   workers for the login scenario (default 2 x cores)
  --users N               users to seed (default 300)
  --tokens N              access tokens to pre-issue for introspection (default 1000)
  --pool-min N            backend DB pool minimum (default 10, the backend's default)
  --pool-max N            backend DB pool maximum (default 100, the backend's default)
  --database-url DSN      use this PostgreSQL (postgres://user:pass@host:port/db)
                          instead of starting a throwaway cluster
  --backend-bin PATH      the backend binary (default: quantaid-backend beside
                          quantaid-loadtest)
  -h, --help              this text
";

#[derive(Clone, Debug)]
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub login_concurrency: usize,
    pub users: usize,
    pub tokens: usize,
    pub pool_min: u32,
    pub pool_max: u32,
    pub database_url: Option<String>,
    pub backend_bin: Option<PathBuf>,
}

impl Options {
    /// `Ok(None)` means help was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Options>> {
        let mut o = Options {
            duration: Duration::from_secs(15),
            warmup: Duration::from_secs(2),
            concurrency: 32,
            login_concurrency: 2 * crate::machine::cores(),
            users: 300,
            tokens: 1000,
            pool_min: 10,
            pool_max: 100,
            database_url: None,
            backend_bin: None,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                return Ok(None);
            }
            let value = args.next().with_context(|| format!("{flag} needs a value (see --help)"))?;
            let num = |max: u64| -> anyhow::Result<u64> {
                let n: u64 = value.parse().with_context(|| format!("{flag} {value:?}: not a number"))?;
                if n == 0 || n > max {
                    bail!("{flag} must be between 1 and {max}");
                }
                Ok(n)
            };
            match flag.as_str() {
                "--duration-secs" => o.duration = Duration::from_secs(num(3600)?),
                "--warmup-secs" => o.warmup = Duration::from_secs(num(600)?),
                "--concurrency" => o.concurrency = num(1024)? as usize,
                "--login-concurrency" => o.login_concurrency = num(1024)? as usize,
                "--users" => o.users = num(100_000)? as usize,
                "--tokens" => o.tokens = num(1_000_000)? as usize,
                "--pool-min" => o.pool_min = num(10_000)? as u32,
                "--pool-max" => o.pool_max = num(10_000)? as u32,
                "--database-url" => o.database_url = Some(value),
                "--backend-bin" => o.backend_bin = Some(value.into()),
                _ => bail!("unknown flag {flag:?} (see --help)"),
            }
        }
        if o.pool_min > o.pool_max {
            bail!("--pool-min ({}) must not exceed --pool-max ({})", o.pool_min, o.pool_max);
        }
        Ok(Some(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Option<Options>> {
        Options::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_override_defaults_and_bad_values_are_named() {
        let o = parse(&["--duration-secs", "3", "--concurrency", "8"]).unwrap().unwrap();
        assert_eq!((o.duration, o.concurrency, o.users), (Duration::from_secs(3), 8, 300));
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--concurrency", "0"]).unwrap_err().to_string().contains("--concurrency"));
        assert!(parse(&["--duration-secs"]).unwrap_err().to_string().contains("needs a value"));
        assert!(parse(&["--pool-min", "20", "--pool-max", "5"]).is_err());
        assert!(parse(&["--bogus", "1"]).is_err());
    }
}
