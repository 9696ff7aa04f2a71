//! The stages of a running pipeline, by kind, with their names.

use std::fmt;
use std::time::Duration;

/// The stages a pipeline runs, from [`Pipeline::topology`](crate::Pipeline::topology).
///
/// Stage names are `{pipeline}.{group}.{i}` for producers (indexes counted across groups),
/// `{pipeline}.processor.{i}`, `{pipeline}.batcher.{name}` and
/// `{pipeline}.batch_processor.{name}.{i}`: the names in logs, spans and `Context::stage`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Topology {
    /// The pipeline's name.
    pub pipeline: String,
    /// The producer groups.
    pub producers: Vec<StageGroup>,
    /// The processors.
    pub processors: StageGroup,
    /// The batchers, in the order they were added.
    pub batchers: Vec<BatcherTopology>,
}

/// A group of identical stages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageGroup {
    /// The group's name.
    pub name: String,
    /// How many stages it has.
    pub concurrency: usize,
    /// Their names.
    pub stages: Vec<String>,
}

/// A batcher and its batch processors.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatcherTopology {
    /// The batcher's name.
    pub name: String,
    /// Its stage's name.
    pub stage: String,
    /// The most messages a batch holds.
    pub batch_size: usize,
    /// How long a batch waits from its first message.
    pub batch_timeout: Duration,
    /// How many batch processors it has.
    pub concurrency: usize,
    /// Their names.
    pub batch_processors: Vec<String>,
}

impl Topology {
    /// Every stage's name, producers first, then processors, then each batcher followed by its
    /// batch processors.
    pub fn stage_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for group in &self.producers {
            names.extend(group.stages.iter().map(String::as_str));
        }
        names.extend(self.processors.stages.iter().map(String::as_str));
        for batcher in &self.batchers {
            names.push(&batcher.stage);
            names.extend(batcher.batch_processors.iter().map(String::as_str));
        }
        names
    }
}

/// One line per group: `producers queue x2: p.queue.0, p.queue.1`, and so on.
impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pipeline {}", self.pipeline)?;
        for group in &self.producers {
            writeln!(
                f,
                "  producers {} x{}: {}",
                group.name,
                group.concurrency,
                group.stages.join(", ")
            )?;
        }
        writeln!(
            f,
            "  processors x{}: {}",
            self.processors.concurrency,
            self.processors.stages.join(", ")
        )?;
        for b in &self.batchers {
            writeln!(
                f,
                "  batcher {} (size {}, timeout {:?}): {} -> {}",
                b.name,
                b.batch_size,
                b.batch_timeout,
                b.stage,
                b.batch_processors.join(", ")
            )?;
        }
        Ok(())
    }
}
