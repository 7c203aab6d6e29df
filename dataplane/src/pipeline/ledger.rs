//! Stage counters across swaps. Each compiled pipeline counts into its own slots; when one is
//! swapped out, its final counts are folded into the port's [`Ledger`] under the stage ids,
//! so a stage that keeps its id in the new pipeline keeps counting from where it was. Ids the
//! new pipeline lacks are forgotten: a stage removed and later re-added starts from zero.

use std::collections::HashMap;
use std::sync::Arc;

use super::compile::Pipeline;
use super::counters::StageTotals;
use super::spec::PipelineSpec;
use super::swap::Retired;

/// One port's carried-over counts.
#[derive(Debug, Default)]
pub struct Ledger {
    retired: HashMap<String, StageTotals>,
    default_retired: StageTotals,
    /// Swapped-out pipelines a worker still held when the swap stopped waiting (normally
    /// none): still counting, folded once free.
    lingering: Vec<Arc<Pipeline>>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    fn fold(&mut self, old: &Pipeline) {
        for (id, t) in old.totals() {
            match id {
                Some(id) => {
                    let e = self.retired.entry(id.to_owned()).or_default();
                    *e = e.add(&t);
                }
                None => self.default_retired = self.default_retired.add(&t),
            }
        }
    }

    /// Takes in the pipeline a swap to `current` retired, folds every lingering pipeline that
    /// is free by now, and forgets ids `current` lacks.
    pub fn retire(&mut self, old: Retired, current: &PipelineSpec) {
        self.lingering.push(match old {
            Retired::Done(p) => {
                self.fold(&p);
                return self.settle(current);
            }
            Retired::Lingering(p) => p,
        });
        self.settle(current);
    }

    fn settle(&mut self, current: &PipelineSpec) {
        for old in std::mem::take(&mut self.lingering) {
            match Retired::Lingering(old).settle() {
                Retired::Done(p) => self.fold(&p),
                Retired::Lingering(p) => self.lingering.push(p),
            }
        }
        // A lingering pipeline's ids stay until it is folded, so its counts land somewhere.
        let lingering = &self.lingering;
        self.retired.retain(|id, _| current.position(id).is_some() || lingering.iter().any(|p| p.spec().position(id).is_some()));
    }

    /// Pipelines still held by a worker past their swap.
    pub fn lingering(&self) -> usize {
        self.lingering.len()
    }

    /// `current`'s counters by stage id plus what those ids carried over, then the default
    /// action's under `None`.
    pub fn totals(&self, current: &Pipeline) -> Vec<(Option<String>, StageTotals)> {
        current
            .totals()
            .map(|(id, t)| {
                let carried = match id {
                    Some(id) => self.retired.get(id).copied().unwrap_or_default(),
                    None => self.default_retired,
                };
                let lingering = self
                    .lingering
                    .iter()
                    .flat_map(|p| p.totals().filter(|(i, _)| *i == id).map(|(_, t)| t).collect::<Vec<_>>())
                    .fold(StageTotals::default(), |a, t| a.add(&t));
                (id.map(str::to_owned), t.add(&carried).add(&lingering))
            })
            .collect()
    }
}
