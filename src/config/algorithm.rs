//! The balancing algorithms a pool can name in the config (Balance implements them).

use serde::Deserialize;
use std::fmt;

/// How Balance's `select` chooses among eligible candidates.
///
/// Deserializes from snake_case (`least_cost`) and also from the kebab-case
/// spellings the seed config uses (`least-cost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Cycle over the candidates in id order.
    #[serde(alias = "round-robin")]
    RoundRobin,
    /// nginx's smooth weighted round robin.
    Weighted,
    /// Fewest in-flight requests per unit of weight; ties by round robin.
    #[serde(alias = "least-connections")]
    LeastConnections,
    /// Lowest peak-EWMA latency; unsampled backends are tried first.
    #[serde(alias = "least-latency")]
    LeastLatency,
    /// Lowest estimated cost of this request; ties by latency, then load.
    #[serde(alias = "least-cost")]
    LeastCost,
    /// Power of two choices over latency × load / weight.
    Adaptive,
}

impl Algorithm {
    /// Every algorithm, in declaration order.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::RoundRobin,
        Algorithm::Weighted,
        Algorithm::LeastConnections,
        Algorithm::LeastLatency,
        Algorithm::LeastCost,
        Algorithm::Adaptive,
    ];

    /// The snake_case label, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::Weighted => "weighted",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::LeastLatency => "least_latency",
            Algorithm::LeastCost => "least_cost",
            Algorithm::Adaptive => "adaptive",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Algorithm, serde_json::Error> {
        serde_json::from_str(&format!("\"{s}\""))
    }

    #[test]
    fn snake_case_round_trips_through_as_str() {
        for alg in Algorithm::ALL {
            assert_eq!(parse(alg.as_str()).unwrap(), alg);
            assert_eq!(alg.to_string(), alg.as_str());
        }
    }

    #[test]
    fn kebab_case_aliases() {
        assert_eq!(parse("round-robin").unwrap(), Algorithm::RoundRobin);
        assert_eq!(
            parse("least-connections").unwrap(),
            Algorithm::LeastConnections
        );
        assert_eq!(parse("least-latency").unwrap(), Algorithm::LeastLatency);
        assert_eq!(parse("least-cost").unwrap(), Algorithm::LeastCost);
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert!(parse("random").is_err());
        assert!(parse("LeastCost").is_err());
    }
}
