//! Durations on the command line and in config files.

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A duration given as seconds (`10`, `0.5`) or with a unit (`500ms`, `10m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(secs) = s.trim().parse::<f64>() {
            return Duration::try_from_secs_f64(secs).map(Seconds).map_err(|e| format!("{s:?}: {e}"));
        }
        humantime::parse_duration(s.trim()).map(Seconds).map_err(|e| format!("{s:?} is not a duration: {e}"))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Duration::try_from_secs_f64(n).map(Seconds).map_err(serde::de::Error::custom),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!("10".parse::<Seconds>().unwrap().0, Duration::from_secs(10));
        assert_eq!("0.5".parse::<Seconds>().unwrap().0, Duration::from_millis(500));
        assert_eq!("10m".parse::<Seconds>().unwrap().0, Duration::from_secs(600));
        assert!("soon".parse::<Seconds>().is_err());
    }
}
