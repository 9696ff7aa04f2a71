//! The errors returned when a pipeline is built or reconfigured.

use std::fmt;

use stage::StartError;

/// An option that breaks its rule: which stage or group it belongs to, its name, the rule and
/// the value given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid option `{option}` of {scope}: {rule}, got {value}")]
pub struct ConfigError {
    /// Where the option was given: `processors`, `batcher "cinema"`, `producer "queue"`,
    /// `rate_limit`, `pipeline`.
    pub scope: String,
    /// The option's name, as its builder method spells it.
    pub option: &'static str,
    /// The rule the value breaks.
    pub rule: String,
    /// The value that was given.
    pub value: String,
}

impl ConfigError {
    pub(crate) fn new(
        scope: impl fmt::Display,
        option: &'static str,
        rule: impl Into<String>,
        value: impl fmt::Debug,
    ) -> Self {
        ConfigError {
            scope: scope.to_string(),
            option,
            rule: rule.into(),
            value: format!("{value:?}"),
        }
    }
}

/// Why a pipeline could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An option breaks its rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A stage of the pipeline did not start.
    #[error("could not start {stage}: {source}")]
    Start {
        /// The stage's name.
        stage: String,
        /// Why.
        source: StartError,
    },
    /// There is no tokio runtime to run the pipeline on.
    #[error("pipelines must be started from within a tokio runtime")]
    NoRuntime,
}

/// Why the rate limit could not be read or changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// The pipeline was built without a rate limit.
    #[error("the pipeline has no rate limit")]
    NotEnabled,
    /// The new limit breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
}
