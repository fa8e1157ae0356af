//! linearizable-register: each workflow's register updates are linearizable.
//!
//! Each workflow holds an integer register (starting at [`REGISTER_INITIAL`]) that `update`
//! operations write, read and compare-and-set. The updates of one workflow id must be
//! explainable by some total order that respects real time (an op that completed before
//! another was invoked comes first) in which each `ok` op's result is what [`RegisterOp::apply`]
//! answers. An `ok` op took effect between its invoke and its ok; an `info` op (or one the
//! history never completed) may have taken effect at any time after its invoke, or never, and
//! its result is unconstrained; a `fail` op never took effect and is dropped. Where the
//! workflow id has a final read, an info op whose update id it does not list as accepted never
//! took effect either and is dropped too (the register workflow applies an update exactly when
//! it accepts it; lost-writes checks the final read against the acknowledged updates).
//!
//! The search is Lowe's just-in-time linearization, breadth first as Knossos's `linear`
//! checker does it, with Wing & Gong's real-time rule and memoized states as in Knossos and
//! Porcupine. Level k holds every state reachable by linearizing k ok ops: which ok ops, which
//! info ops, and the register's value. An ok op can come next if it was invoked before the
//! first return of the ok ops not yet linearized, and if it answers its recorded result. Info
//! ops are used only where needed: a step may put a short chain of open info ops before an ok
//! op that would otherwise answer differently, and nowhere else (a chain before an op that
//! answers the same without it can be moved after that op, or dropped). A state is dropped
//! if the level holds one with the same ok ops and value and a subset of its info ops, since
//! that one can do everything it can; levels are complete before they are expanded, so
//! nothing is explored twice. Since a level-by-level search visits every state even when a
//! linearization is easy to find, a depth-first search over the same steps and states runs
//! first with half the budget. Both together stop after [`STEP_BUDGET`] steps per workflow,
//! and the verdict says `unknown` for it.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{index::HistoryIndex, Findings, Verdict};
use crate::history::{op_name, RecordType, RegisterOp, RegisterResult, REGISTER_INITIAL};

pub const NAME: &str = "linearizable-register";

/// Search steps one workflow may take before its verdict is unknown.
pub const STEP_BUDGET: u64 = 5_000_000;

/// One update as the search sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterCall {
    pub update_id: String,
    pub op: RegisterOp,
    /// History index of the invoke.
    pub invoked_at: u64,
    /// History index of the ok, and what it answered; `None` for an unknown outcome.
    pub returned: Option<(u64, RegisterResult)>,
}

impl RegisterCall {
    fn describe(&self) -> String {
        match self.returned {
            Some((at, result)) => format!(
                "{} {:?} -> {:?} (#{}..#{at})",
                self.update_id, self.op, result, self.invoked_at
            ),
            None => format!(
                "{} {:?} -> ? (#{}.., unknown outcome)",
                self.update_id, self.op, self.invoked_at
            ),
        }
    }
}

/// Where the search got stuck: the last level it reached, and why nothing follows.
#[derive(Clone, Debug, PartialEq)]
pub struct Stuck {
    /// How many ok ops it could linearize, and the values the register could hold then.
    pub linearized: usize,
    pub registers: Vec<i64>,
    /// The ok op with the earliest return among those not linearized (in one of the states):
    /// it, or an op invoked before it returned, must come next.
    pub blocking: usize,
    /// The ok ops that could come next, none of which answers its recorded result.
    pub candidates: Vec<usize>,
}

/// What the search concluded for one workflow.
#[derive(Clone, Debug, PartialEq)]
pub enum Linearization {
    Linearizable,
    NotLinearizable(Stuck),
    /// The step budget ran out.
    GaveUp {
        steps: u64,
    },
}

pub fn check(index: &HistoryIndex) -> Verdict {
    check_with_budget(index, STEP_BUDGET)
}

/// [`check`] with `budget` search steps per workflow.
pub fn check_with_budget(index: &HistoryIndex, budget: u64) -> Verdict {
    let mut findings = Findings::new(NAME, "workflows with register updates");
    let mut workflows: BTreeMap<&str, Vec<RegisterCall>> = BTreeMap::new();
    let mut ops_checked = 0usize;
    let mut never_applied = 0usize;
    let accepted = accepted_updates(index);
    for operation in index.operations_named(op_name::UPDATE) {
        let invoke = operation.invoke;
        let (workflow_id, update_id, op) = match (|| {
            Ok::<_, crate::history::ValueError>((
                invoke.workflow()?,
                invoke.update_id()?,
                invoke.register_op()?,
            ))
        })() {
            Ok(fields) => fields,
            Err(error) => {
                findings.malformed(invoke, &error);
                continue;
            }
        };
        let returned = match operation.outcome() {
            RecordType::Fail => continue,
            RecordType::Ok => {
                let Some(ok) = operation.ok() else { continue };
                match ok.register_result() {
                    Ok(result) => Some((ok.index, result)),
                    Err(error) => {
                        // Unreadable results constrain nothing; the violation says why.
                        findings.malformed(ok, &error);
                        None
                    }
                }
            }
            RecordType::Info | RecordType::Invoke => None,
        };
        // A read of unknown outcome changes nothing and its answer is unknown: it cannot
        // constrain the search, so leave it out.
        if returned.is_none() && op == RegisterOp::Read {
            continue;
        }
        // An update of unknown outcome that the final read does not list as accepted was never
        // applied: the register workflow applies an update exactly when it accepts it.
        let unaccepted = accepted
            .get(workflow_id)
            .is_some_and(|accepted| !accepted.contains(update_id));
        if returned.is_none() && unaccepted {
            never_applied += 1;
            continue;
        }
        ops_checked += 1;
        workflows
            .entry(workflow_id)
            .or_default()
            .push(RegisterCall {
                update_id: update_id.to_string(),
                op,
                invoked_at: invoke.index,
                returned,
            });
    }

    let mut gave_up = Vec::new();
    for (workflow_id, calls) in &workflows {
        findings.checked();
        match linearize(calls, budget) {
            Linearization::Linearizable => {}
            Linearization::NotLinearizable(stuck) => {
                let blocking = &calls[stuck.blocking];
                let candidates: Vec<String> = stuck
                    .candidates
                    .iter()
                    .map(|candidate| calls[*candidate].describe())
                    .collect();
                let registers: Vec<String> = stuck.registers.iter().map(i64::to_string).collect();
                findings.violation(
                    Some(workflow_id),
                    blocking.returned.map(|(at, _)| at),
                    format!(
                        "not linearizable: after {} acknowledged updates the register can hold \
                         only [{}], and none of the updates that may come next answers what it \
                         did (even after updates of unknown outcome): [{}]; {} must take \
                         effect before it returns",
                        stuck.linearized,
                        registers.join(", "),
                        candidates.join("; "),
                        blocking.describe(),
                    ),
                );
            }
            Linearization::GaveUp { steps } => gave_up.push(format!(
                "{workflow_id} ({} updates, {steps} steps)",
                calls.len()
            )),
        }
    }
    findings.note(format!(
        "{ops_checked} updates checked; {never_applied} of unknown outcome left out because \
         the final read shows they were never accepted"
    ));
    if !gave_up.is_empty() {
        findings.unknown(format!(
            "search gave up (budget {budget} steps) on {}",
            gave_up.join(", ")
        ));
    }
    findings.verdict()
}

/// The update ids each workflow id's final read lists as accepted, for workflow ids that
/// have a final read.
fn accepted_updates<'a>(index: &'a HistoryIndex) -> HashMap<&'a str, HashSet<&'a str>> {
    let mut accepted: HashMap<&str, HashSet<&str>> = HashMap::new();
    for workflow_id in index.final_read_workflows() {
        if let Some((_, final_read)) = index.final_read(workflow_id) {
            let ids = accepted.entry(workflow_id).or_default();
            for run in &final_read.runs {
                ids.extend(run.updates_accepted.iter().map(String::as_str));
            }
        }
    }
    accepted
}

/// A fixed-size set of op positions, cheap to hash and compare, that knows its size.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OpSet {
    words: Box<[u64]>,
    len: usize,
}

impl OpSet {
    fn new(capacity: usize) -> Self {
        OpSet {
            words: vec![0; capacity.div_ceil(64)].into_boxed_slice(),
            len: 0,
        }
    }

    fn contains(&self, position: usize) -> bool {
        self.words[position / 64] & (1 << (position % 64)) != 0
    }

    /// This set with `position` added.
    fn with(&self, position: usize) -> OpSet {
        let mut bigger = self.clone();
        if !bigger.contains(position) {
            bigger.words[position / 64] |= 1 << (position % 64);
            bigger.len += 1;
        }
        bigger
    }

    fn is_subset(&self, other: &OpSet) -> bool {
        self.len <= other.len
            && self
                .words
                .iter()
                .zip(other.words.iter())
                .all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// The states of one level: for each set of linearized ok ops and register value, the sets of
/// info ops used to get there, none a subset of another (a superset would be dominated).
#[derive(Default)]
struct Level {
    states: BTreeMap<OpSet, BTreeMap<i64, Vec<OpSet>>>,
}

impl Level {
    /// Adds a state unless the level holds one that dominates it, dropping those it dominates;
    /// answers whether it was added.
    fn insert(&mut self, ok_ops: OpSet, register: i64, info_ops: OpSet) -> bool {
        let info_sets = self
            .states
            .entry(ok_ops)
            .or_default()
            .entry(register)
            .or_default();
        if info_sets.iter().any(|known| known.is_subset(&info_ops)) {
            return false;
        }
        info_sets.retain(|known| !info_ops.is_subset(known));
        info_sets.push(info_ops);
        true
    }

    fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

/// The calls of one workflow, arranged for the search.
struct Search<'a> {
    calls: &'a [RegisterCall],
    /// Ok calls by return, and by invoke.
    ok_by_return: Vec<usize>,
    ok_by_invoke: Vec<usize>,
    /// Info calls by invoke.
    info_by_invoke: Vec<usize>,
    /// For each info call, the latest info call invoked before it with the same op. Both stay
    /// open forever once invoked, so a linearization that uses the later while the earlier is
    /// unused can use the earlier instead: the search only ever takes the earliest unused.
    earlier_twin: Vec<Option<usize>>,
    steps: u64,
    budget: u64,
}

/// The budget ran out.
struct OutOfSteps;

impl<'a> Search<'a> {
    fn new(calls: &'a [RegisterCall], budget: u64) -> Self {
        let mut ok_by_return: Vec<usize> = (0..calls.len())
            .filter(|op| calls[*op].returned.is_some())
            .collect();
        let mut ok_by_invoke = ok_by_return.clone();
        ok_by_return.sort_by_key(|op| calls[*op].returned.map(|(at, _)| at));
        ok_by_invoke.sort_by_key(|op| calls[*op].invoked_at);
        let mut info_by_invoke: Vec<usize> = (0..calls.len())
            .filter(|op| calls[*op].returned.is_none())
            .collect();
        info_by_invoke.sort_by_key(|op| calls[*op].invoked_at);
        let mut latest_with_op: HashMap<RegisterOp, usize> = HashMap::new();
        let mut earlier_twin = vec![None; calls.len()];
        for &op in &info_by_invoke {
            earlier_twin[op] = latest_with_op.insert(calls[op].op, op);
        }
        Search {
            calls,
            ok_by_return,
            ok_by_invoke,
            info_by_invoke,
            earlier_twin,
            steps: 0,
            budget,
        }
    }

    fn step(&mut self) -> Result<(), OutOfSteps> {
        self.steps += 1;
        if self.steps > self.budget {
            return Err(OutOfSteps);
        }
        Ok(())
    }

    /// The earliest return among the ok calls not in `ok_ops` (the one that blocks), and the
    /// ok calls not in `ok_ops` invoked before it (those that may come next).
    fn candidates(&self, ok_ops: &OpSet) -> (usize, Vec<usize>) {
        let Some(&blocking) = self.ok_by_return.iter().find(|op| !ok_ops.contains(**op)) else {
            return (0, Vec::new());
        };
        let open_until = self.calls[blocking].returned.map_or(u64::MAX, |(at, _)| at);
        let candidates = self
            .ok_by_invoke
            .iter()
            .take_while(|op| self.calls[**op].invoked_at < open_until)
            .filter(|op| !ok_ops.contains(**op))
            .copied()
            .collect();
        (blocking, candidates)
    }

    /// The info calls open while `blocking` has not returned.
    fn open_info(&self, blocking: usize) -> &[usize] {
        let open_until = self.calls[blocking].returned.map_or(u64::MAX, |(at, _)| at);
        let open = self
            .info_by_invoke
            .partition_point(|op| self.calls[*op].invoked_at < open_until);
        &self.info_by_invoke[..open]
    }

    /// Adds to `next` every state reached from `(ok_ops, register, info_ops)` by linearizing
    /// the ok call `op`, directly or after a chain of open info calls.
    fn advance(
        &mut self,
        state: (&OpSet, i64, &OpSet),
        op: usize,
        open_info: &[usize],
        next: &mut Level,
    ) -> Result<(), OutOfSteps> {
        let (ok_ops, register, info_ops) = state;
        self.step()?;
        let call = &self.calls[op];
        let mut after = register;
        if self.answers_as_recorded(op, &mut after) {
            let _ = next.insert(ok_ops.with(op), after, info_ops.clone());
            return Ok(());
        }
        if matches!(call.op, RegisterOp::Write(_)) {
            return Ok(());
        }
        let mut chain_values = vec![register];
        self.chain(
            (ok_ops, register, info_ops),
            op,
            open_info,
            &mut chain_values,
            next,
        )
    }

    /// True if the ok call `op` answers its recorded result from `register`, which it updates.
    fn answers_as_recorded(&self, op: usize, register: &mut i64) -> bool {
        let call = &self.calls[op];
        let answered = call.op.apply(register);
        call.returned
            .is_some_and(|(_, expected)| expected == answered)
    }

    /// Extends a chain of info calls (the register's values along it in `chain_values`)
    /// until the ok call `op` answers as recorded. A chain never revisits a value (the loop
    /// would be a dominated detour) and writes only as its first link (a later write would
    /// overwrite the links before it, which could then be dropped).
    fn chain(
        &mut self,
        state: (&OpSet, i64, &OpSet),
        op: usize,
        open_info: &[usize],
        chain_values: &mut Vec<i64>,
        next: &mut Level,
    ) -> Result<(), OutOfSteps> {
        let (ok_ops, register, info_ops) = state;
        let first_link = chain_values.len() == 1;
        for &info in open_info {
            let info_call = &self.calls[info];
            let usable = !info_ops.contains(info)
                && self.earlier_twin[info].is_none_or(|twin| info_ops.contains(twin))
                && (first_link || !matches!(info_call.op, RegisterOp::Write(_)));
            if !usable {
                continue;
            }
            self.step()?;
            let mut linked = register;
            info_call.op.apply(&mut linked);
            if chain_values.contains(&linked) {
                continue;
            }
            let info_ops = info_ops.with(info);
            let mut after = linked;
            if self.answers_as_recorded(op, &mut after) {
                let _ = next.insert(ok_ops.with(op), after, info_ops);
                continue;
            }
            chain_values.push(linked);
            self.chain(
                (ok_ops, linked, &info_ops),
                op,
                open_info,
                chain_values,
                next,
            )?;
            chain_values.pop();
        }
        Ok(())
    }

    /// True if some linearization continues from `state`; `explored` holds the states
    /// already explored (or being explored), so a state they dominate is skipped.
    fn depth_first(
        &mut self,
        state: (&OpSet, i64, &OpSet),
        explored: &mut Level,
    ) -> Result<bool, OutOfSteps> {
        let (ok_ops, _, _) = state;
        if ok_ops.len == self.ok_by_return.len() {
            return Ok(true);
        }
        let (blocking, candidates) = self.candidates(ok_ops);
        let open_info = self.open_info(blocking).to_vec();
        let mut successors = Level::default();
        for &op in &candidates {
            self.advance(state, op, &open_info, &mut successors)?;
        }
        for (ok_ops, registers) in &successors.states {
            for (register, info_sets) in registers {
                for info_ops in info_sets {
                    if explored.insert(ok_ops.clone(), *register, info_ops.clone())
                        && self.depth_first((ok_ops, *register, info_ops), explored)?
                    {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Expands every state of one level before the next.
    fn level_by_level(&mut self) -> Result<Linearization, OutOfSteps> {
        let mut level = Level::default();
        level.insert(
            OpSet::new(self.calls.len()),
            REGISTER_INITIAL,
            OpSet::new(self.calls.len()),
        );
        for linearized in 0..self.ok_by_return.len() {
            let mut next = Level::default();
            for (ok_ops, registers) in &level.states {
                let (blocking, candidates) = self.candidates(ok_ops);
                let open_info = self.open_info(blocking).to_vec();
                for (register, info_sets) in registers {
                    for info_ops in info_sets {
                        for &op in &candidates {
                            self.advance((ok_ops, *register, info_ops), op, &open_info, &mut next)?;
                        }
                    }
                }
            }
            if next.is_empty() {
                return Ok(Linearization::NotLinearizable(
                    self.stuck(&level, linearized),
                ));
            }
            level = next;
        }
        Ok(Linearization::Linearizable)
    }

    /// Describes the last level the search reached.
    fn stuck(&self, level: &Level, linearized: usize) -> Stuck {
        let mut registers: Vec<i64> = level
            .states
            .values()
            .flat_map(|registers| registers.keys().copied())
            .collect();
        registers.sort_unstable();
        registers.dedup();
        let (blocking, candidates) = level
            .states
            .keys()
            .next()
            .map_or((0, Vec::new()), |ok_ops| self.candidates(ok_ops));
        Stuck {
            linearized,
            registers,
            blocking,
            candidates,
        }
    }
}

/// Searches for a linearization of `calls` (one workflow's updates), taking at most `budget`
/// steps: depth first with half of them (it finds a linearization fast when there is one),
/// then level by level (it proves there is none without exploring a state twice).
pub fn linearize(calls: &[RegisterCall], budget: u64) -> Linearization {
    let depth_first_budget = budget / 2;
    let mut search = Search::new(calls, depth_first_budget);
    let start = OpSet::new(calls.len());
    let mut explored = Level::default();
    if let Ok(true) = search.depth_first((&start, REGISTER_INITIAL, &start), &mut explored) {
        return Linearization::Linearizable;
    }
    search.steps = 0;
    search.budget = budget - depth_first_budget;
    search
        .level_by_level()
        .unwrap_or(Linearization::GaveUp { steps: budget })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{
        test_history::{run, HistoryBuilder, STARTED},
        Outcome,
    };
    use RegisterOp::{Cas, Read, Write};
    use RegisterResult::{Swapped, Value, Written};

    fn verdict(history: &HistoryBuilder) -> Verdict {
        let records = history.build();
        check(&HistoryIndex::new(&records))
    }

    #[test]
    fn sequential_updates_are_linearizable() {
        let mut history = HistoryBuilder::new();
        history
            .update("c1", "w1", "u1", Write(1), Written)
            .update("c1", "w1", "u2", Read, Value(1))
            .update("c2", "w1", "u3", Cas(1, 2), Swapped(true))
            .update("c2", "w1", "u4", Cas(1, 3), Swapped(false))
            .update("c1", "w1", "u5", Read, Value(2))
            .update("c1", "w2", "u6", Read, Value(0));
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");
        assert_eq!(verdict.checked, 2);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let mut history = HistoryBuilder::new();
        history.update("c1", "w1", "u1", Write(1), Written).update(
            "c2",
            "w1",
            "u2",
            Read,
            Value(0),
        );
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        let description = &verdict.violations[0].description;
        assert!(description.contains("u2 Read -> Value(0)"), "{description}");
        assert_eq!(verdict.violations[0].index, Some(3));
    }

    #[test]
    fn two_successful_cas_from_the_same_value_are_caught() {
        let mut history = HistoryBuilder::new();
        history
            .update_invoke("c1", "w1", "u1", Cas(0, 1))
            .update_invoke("c2", "w1", "u2", Cas(0, 2))
            .update_ok("c1", "w1", "u1", Cas(0, 1), Swapped(true))
            .update_ok("c2", "w1", "u2", Cas(0, 2), Swapped(true));
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid, "{verdict:#?}");
    }

    #[test]
    fn concurrent_writes_and_reads_may_take_effect_in_either_order() {
        let mut history = HistoryBuilder::new();
        history
            .update_invoke("c1", "w1", "u1", Write(1))
            .update_invoke("c2", "w1", "u2", Read)
            .update_invoke("c3", "w1", "u3", Write(2))
            .update_ok("c2", "w1", "u2", Read, Value(2))
            .update_invoke("c2", "w1", "u4", Read)
            .update_ok("c1", "w1", "u1", Write(1), Written)
            .update_ok("c2", "w1", "u4", Read, Value(1))
            .update_ok("c3", "w1", "u3", Write(2), Written)
            .update("c1", "w1", "u5", Read, Value(1));
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never_and_failures_are_ignored() {
        let mut history = HistoryBuilder::new();
        history
            .update_invoke("c1", "w1", "u1", Write(7))
            .update_end("c1", "w1", "u1", RecordType::Info)
            .update_invoke("c2", "w1", "u2", Write(9))
            .update_end("c2", "w1", "u2", RecordType::Fail)
            .update("c2", "w1", "u3", Read, Value(0))
            .update("c2", "w1", "u4", Read, Value(7))
            .update("c2", "w1", "u5", Write(3), Written)
            .update("c2", "w1", "u6", Read, Value(3))
            .update_invoke("c3", "w1", "u7", Cas(3, 4))
            .update_end("c3", "w1", "u7", RecordType::Info)
            .update_invoke("c4", "w1", "u8", Read);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");

        // The failed write of 9 never happened, so nobody may read it.
        history.update("c2", "w1", "u9", Read, Value(9));
        let verdict = super::tests::verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid, "{verdict:#?}");
    }

    #[test]
    fn an_unknown_write_takes_effect_at_most_once() {
        let mut history = HistoryBuilder::new();
        history
            .update_invoke("c1", "w1", "u1", Write(7))
            .update_end("c1", "w1", "u1", RecordType::Info)
            .update("c2", "w1", "u2", Read, Value(7))
            .update("c2", "w1", "u3", Write(3), Written)
            .update("c2", "w1", "u4", Read, Value(7));
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid, "{verdict:#?}");
    }

    #[test]
    fn an_unknown_update_the_final_read_never_accepted_never_took_effect() {
        let history_with_accepted = |accepted: &[&str]| {
            let mut final_run = run("r1", "Running", &[STARTED]);
            final_run.updates_accepted = accepted.iter().map(|id| id.to_string()).collect();
            let mut history = HistoryBuilder::new();
            history
                .update_invoke("c1", "w1", "u1", Write(7))
                .update_end("c1", "w1", "u1", RecordType::Info)
                .update("c2", "w1", "u2", Read, Value(7))
                .final_read("w1", vec![final_run]);
            verdict(&history)
        };
        assert_eq!(history_with_accepted(&["u1", "u2"]).outcome, Outcome::Valid);
        let verdict = history_with_accepted(&["u2"]);
        assert_eq!(verdict.outcome, Outcome::Invalid, "{verdict:#?}");
        assert!(verdict.notes[0].contains("1 of unknown outcome left out"));
    }

    #[test]
    fn the_search_gives_up_within_its_budget() {
        let records = generated_history(1, 5, 200, 10).build();
        let verdict = check_with_budget(&HistoryIndex::new(&records), 100);
        assert_eq!(verdict.outcome, Outcome::Unknown, "{verdict:#?}");
        assert!(
            verdict
                .notes
                .iter()
                .any(|note| note.contains("search gave up (budget 100 steps) on w1")),
            "{verdict:#?}"
        );
    }

    fn generated_history(
        seed: u64,
        clients: usize,
        updates: usize,
        info_percent: u64,
    ) -> HistoryBuilder {
        let mut history = HistoryBuilder::new();
        history.register_updates("w1", seed, clients, updates, info_percent);
        history
    }

    #[test]
    fn generated_linearizable_histories_pass() {
        for (seeds, info_percent) in [(1..=50, 5), (1..=10, 20)] {
            for seed in seeds {
                let history = generated_history(seed, 5, 200, info_percent);
                let verdict = verdict(&history);
                assert_eq!(
                    verdict.outcome,
                    Outcome::Valid,
                    "reproduce with generated_history({seed}, 5, 200, {info_percent}): \
                     {verdict:#?}"
                );
            }
        }
    }

    #[test]
    fn generated_histories_with_an_impossible_read_fail() {
        for seed in 1..=20 {
            let mut records = generated_history(seed, 5, 200, 5).build();
            // Values written are 0..5, so no read can answer 1000.
            let Some(read) = records.iter_mut().rev().find(|record| {
                record.kind == RecordType::Ok && record.value["op"] == serde_json::json!("read")
            }) else {
                continue;
            };
            read.value["result"] = serde_json::json!(Value(1000));
            let verdict = check(&HistoryIndex::new(&records));
            assert_eq!(
                verdict.outcome,
                Outcome::Invalid,
                "seed {seed}: reproduce with generated_history({seed}, 5, 200, 5)"
            );
        }
    }
}
