//! Temporal's visibility query language (the "List Filter" of ListWorkflowExecutions,
//! ScanWorkflowExecutions and CountWorkflowExecutions): a tokenizer, a recursive-descent parser
//! that types every condition against the namespace's search attributes, and an evaluator over a
//! run's `MutableState`. Pure: no I/O, no clock; an error says what was wrong and where.
//!
//! Matching follows Temporal's SQL visibility (what `temporal server start-dev` runs): a
//! condition on a field the run lacks (CloseTime of an open run, an unset custom attribute) is
//! unknown, so neither it nor its negation matches, except on Text and KeywordList attributes,
//! which hold sets of words or keywords: a run without one holds the empty set, so `!=` and
//! `NOT IN` match it. ORDER BY is supported, as with Elasticsearch visibility; runs without the
//! sort field come last.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use crate::engine::proto::{self, common, enums};
use crate::engine::{activity_execution, MutableState};
use crate::namespaces::SearchAttributeTypes;

/// Longest query accepted, in bytes. Temporal documents no limit; 32 KiB holds an IN list of
/// several hundred workflow ids while bounding the work one request can ask for.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;

/// Deepest nesting of parentheses and NOT accepted; bounds the parser's and the evaluator's
/// recursion.
pub const MAX_NESTING: usize = 32;

/// A query Keel cannot run: InvalidArgument, worded as Temporal words it (`invalid query: ...`)
/// and saying where in the query the problem is.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid query: {0}")]
pub struct QueryError(String);

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Status {
        Status::invalid_argument(error.to_string())
    }
}

/// A parsed list query: which runs it selects, how it groups and how it sorts them.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    filter: Option<Expr>,
    group_by_status: bool,
    order_by: Vec<SortKey>,
    names_namespace_division: bool,
}

impl ListQuery {
    /// A query of ListWorkflowExecutions, ScanWorkflowExecutions or CountWorkflowExecutions.
    /// GROUP BY ExecutionStatus groups Count's answer; the lists ignore it, as Temporal's SQL
    /// visibility does.
    pub fn parse(query: &str, custom: &SearchAttributeTypes) -> Result<ListQuery, QueryError> {
        parse(query, custom)
    }

    /// True if the query selects the run.
    pub fn matches(&self, state: &MutableState) -> bool {
        match &self.filter {
            Some(filter) => filter.eval(&RunView::new(state)) == Truth::True,
            None => true,
        }
    }

    /// True for `GROUP BY ExecutionStatus`.
    pub fn groups_by_status(&self) -> bool {
        self.group_by_status
    }

    /// True when the query names `TemporalNamespaceDivision`: only such queries list the runs
    /// of schedules, as in Temporal.
    pub fn names_namespace_division(&self) -> bool {
        self.names_namespace_division
    }

    /// `runs` in the query's order (StartTime descending without ORDER BY), ties by run id.
    pub fn sort(&self, runs: Vec<MutableState>) -> Vec<MutableState> {
        let default = [SortKey {
            field: Field::System(SystemField::StartTime),
            descending: true,
        }];
        let keys: &[SortKey] = if self.order_by.is_empty() {
            &default
        } else {
            &self.order_by
        };
        let mut keyed: Vec<(Vec<Option<Value>>, MutableState)> = runs
            .into_iter()
            .map(|state| {
                let values = {
                    let run = RunView::new(&state);
                    keys.iter().map(|key| run.first_value(&key.field)).collect()
                };
                (values, state)
            })
            .collect();
        keyed.sort_by(|(a_values, a), (b_values, b)| {
            compare_sort_values(keys, a_values, b_values).then_with(|| a.run_id.cmp(&b.run_id))
        });
        keyed.into_iter().map(|(_, state)| state).collect()
    }
}

/// CountWorkflowExecutions' groups for `GROUP BY ExecutionStatus`: one per status present, in
/// the enum's order, valued by the status name as a JSON Keyword payload, as Temporal encodes it.
pub fn status_groups(
    runs: &[MutableState],
) -> Vec<ws::count_workflow_executions_response::AggregationGroup> {
    let mut counts: BTreeMap<i32, (&'static str, i64)> = BTreeMap::new();
    for run in runs {
        let (order, name) = status_key(run);
        counts.entry(order).or_insert((name, 0)).1 += 1;
    }
    counts
        .into_values()
        .map(
            |(name, count)| ws::count_workflow_executions_response::AggregationGroup {
                group_values: vec![keyword_payload(name)],
                count,
            },
        )
        .collect()
}

/// `text` as a query string literal (single-quoted, `\` and `'` escaped).
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Temporal's name of a search attribute type (`Keyword`, `Datetime`...), as payload metadata
/// carries it; None for an unknown type.
pub fn type_name(indexed: i32) -> Option<&'static str> {
    Kind::of(indexed).map(Kind::name)
}

/// Temporal's system search attributes Keel's visibility knows, with their types (not the
/// fields only lists of standalone activities have).
pub fn system_attributes() -> impl Iterator<Item = (&'static str, enums::IndexedValueType)> {
    SystemField::ALL
        .into_iter()
        .filter(|field| !matches!(field, SystemField::ActivityId | SystemField::ActivityType))
        .map(|field| (field.name(), field.kind().indexed()))
        .chain(predefined_attributes())
}

/// Temporal's predefined search attributes that runs carry among their own (set by Temporal,
/// or by SDKs and users, as Temporal allows): a workflow's patches (TemporalChangeVersion), the
/// binary checksums of its workers, and what a schedule gives the workflows it starts.
fn predefined_attributes() -> impl Iterator<Item = (&'static str, enums::IndexedValueType)> {
    [
        (
            "TemporalChangeVersion",
            enums::IndexedValueType::KeywordList,
        ),
        ("BinaryChecksums", enums::IndexedValueType::KeywordList),
    ]
    .into_iter()
    .chain(crate::engine::schedule::SCHEDULED_ATTRIBUTES)
}

fn keyword_payload(text: &str) -> common::Payload {
    proto::typed_json_payload(text, "Keyword")
}

// ---------------------------------------------------------------------------------------------
// Fields and values

/// A search attribute's value type (Temporal's `IndexedValueType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Keyword,
    Int,
    Double,
    Bool,
    Datetime,
    KeywordList,
}

impl Kind {
    fn of(indexed: i32) -> Option<Kind> {
        use enums::IndexedValueType as T;
        Some(match T::try_from(indexed).ok()? {
            T::Text => Kind::Text,
            T::Keyword => Kind::Keyword,
            T::Int => Kind::Int,
            T::Double => Kind::Double,
            T::Bool => Kind::Bool,
            T::Datetime => Kind::Datetime,
            T::KeywordList => Kind::KeywordList,
            T::Unspecified => return None,
        })
    }

    fn indexed(self) -> enums::IndexedValueType {
        use enums::IndexedValueType as T;
        match self {
            Kind::Text => T::Text,
            Kind::Keyword => T::Keyword,
            Kind::Int => T::Int,
            Kind::Double => T::Double,
            Kind::Bool => T::Bool,
            Kind::Datetime => T::Datetime,
            Kind::KeywordList => T::KeywordList,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Text => "Text",
            Kind::Keyword => "Keyword",
            Kind::Int => "Int",
            Kind::Double => "Double",
            Kind::Bool => "Bool",
            Kind::Datetime => "Datetime",
            Kind::KeywordList => "KeywordList",
        }
    }

    /// Text and KeywordList hold sets (of words, of keywords): a run without the attribute holds
    /// the empty set, so `=` is false and `!=` true rather than unknown.
    fn holds_set(self) -> bool {
        matches!(self, Kind::Text | Kind::KeywordList)
    }
}

/// The system search attributes a query can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SystemField {
    WorkflowId,
    RunId,
    WorkflowType,
    ExecutionStatus,
    TaskQueue,
    StartTime,
    CloseTime,
    ExecutionTime,
    ExecutionDuration,
    HistoryLength,
    HistorySizeBytes,
    StateTransitionCount,
    ParentWorkflowId,
    ParentRunId,
    RootWorkflowId,
    RootRunId,
    NamespaceDivision,
    WorkerDeployment,
    WorkerDeploymentVersion,
    VersioningBehavior,
    ActivityId,
    ActivityType,
}

impl SystemField {
    const ALL: [SystemField; 22] = [
        SystemField::WorkflowId,
        SystemField::RunId,
        SystemField::WorkflowType,
        SystemField::ExecutionStatus,
        SystemField::TaskQueue,
        SystemField::StartTime,
        SystemField::CloseTime,
        SystemField::ExecutionTime,
        SystemField::ExecutionDuration,
        SystemField::HistoryLength,
        SystemField::HistorySizeBytes,
        SystemField::StateTransitionCount,
        SystemField::ParentWorkflowId,
        SystemField::ParentRunId,
        SystemField::RootWorkflowId,
        SystemField::RootRunId,
        SystemField::NamespaceDivision,
        SystemField::WorkerDeployment,
        SystemField::WorkerDeploymentVersion,
        SystemField::VersioningBehavior,
        SystemField::ActivityId,
        SystemField::ActivityType,
    ];

    fn name(self) -> &'static str {
        match self {
            SystemField::WorkflowId => "WorkflowId",
            SystemField::RunId => "RunId",
            SystemField::WorkflowType => "WorkflowType",
            SystemField::ExecutionStatus => "ExecutionStatus",
            SystemField::TaskQueue => "TaskQueue",
            SystemField::StartTime => "StartTime",
            SystemField::CloseTime => "CloseTime",
            SystemField::ExecutionTime => "ExecutionTime",
            SystemField::ExecutionDuration => "ExecutionDuration",
            SystemField::HistoryLength => "HistoryLength",
            SystemField::HistorySizeBytes => "HistorySizeBytes",
            SystemField::StateTransitionCount => "StateTransitionCount",
            SystemField::ParentWorkflowId => "ParentWorkflowId",
            SystemField::ParentRunId => "ParentRunId",
            SystemField::RootWorkflowId => "RootWorkflowId",
            SystemField::RootRunId => "RootRunId",
            SystemField::NamespaceDivision => "TemporalNamespaceDivision",
            SystemField::WorkerDeployment => "TemporalWorkerDeployment",
            SystemField::WorkerDeploymentVersion => "TemporalWorkerDeploymentVersion",
            SystemField::VersioningBehavior => "TemporalWorkflowVersioningBehavior",
            SystemField::ActivityId => "ActivityId",
            SystemField::ActivityType => "ActivityType",
        }
    }

    fn kind(self) -> Kind {
        match self {
            SystemField::StartTime | SystemField::CloseTime | SystemField::ExecutionTime => {
                Kind::Datetime
            }
            SystemField::ExecutionDuration
            | SystemField::HistoryLength
            | SystemField::HistorySizeBytes
            | SystemField::StateTransitionCount => Kind::Int,
            _ => Kind::Keyword,
        }
    }
}

/// A field a query names: a system attribute or one of the namespace's custom attributes.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    System(SystemField),
    Custom { name: String, kind: Kind },
}

impl Field {
    fn resolve(name: &str, custom: &SearchAttributeTypes) -> Result<Field, String> {
        if let Some(system) = SystemField::ALL.iter().find(|f| f.name() == name) {
            return Ok(Field::System(*system));
        }
        let predefined = predefined_attributes()
            .find(|(predefined, _)| *predefined == name)
            .map(|(_, kind)| kind as i32);
        if let Some(kind) = predefined.or(custom.get(name).copied()).and_then(Kind::of) {
            return Ok(Field::Custom {
                name: name.to_string(),
                kind,
            });
        }
        let mut known = SystemField::ALL
            .iter()
            .map(|f| f.name())
            .chain(custom.keys().map(String::as_str));
        let hint = match known.find(|k| k.eq_ignore_ascii_case(name)) {
            Some(similar) => format!("names are case sensitive: did you mean {similar}?"),
            None => "it is neither a system search attribute nor a custom one registered in \
                     this namespace"
                .to_string(),
        };
        Err(format!("invalid search attribute: {name} ({hint})"))
    }

    fn name(&self) -> &str {
        match self {
            Field::System(system) => system.name(),
            Field::Custom { name, .. } => name,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Field::System(system) => system.kind(),
            Field::Custom { kind, .. } => *kind,
        }
    }
}

/// A typed value: of a query operand, or held by a run.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds since the Unix epoch.
    Time(i64),
}

impl Value {
    /// Order of two values of the same type (integers and floats compare numerically); None
    /// across types.
    fn order(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) | (Value::Time(a), Value::Time(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Float(b)) => (*a as f64).partial_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Execution statuses by Temporal's short name, as queries and GROUP BY spell them.
const STATUSES: [(&str, enums::WorkflowExecutionStatus); 8] = [
    ("Unspecified", enums::WorkflowExecutionStatus::Unspecified),
    ("Running", enums::WorkflowExecutionStatus::Running),
    ("Completed", enums::WorkflowExecutionStatus::Completed),
    ("Failed", enums::WorkflowExecutionStatus::Failed),
    ("Canceled", enums::WorkflowExecutionStatus::Canceled),
    ("Terminated", enums::WorkflowExecutionStatus::Terminated),
    (
        "ContinuedAsNew",
        enums::WorkflowExecutionStatus::ContinuedAsNew,
    ),
    ("TimedOut", enums::WorkflowExecutionStatus::TimedOut),
];

/// A run's status as queries spell it, and its place in its enum: a workflow's execution
/// status, or a standalone activity's (which may be `Paused`).
fn status_key(run: &MutableState) -> (i32, &'static str) {
    if run.activity_execution.is_some() {
        let status = activity_execution::status(run);
        (status as i32, activity_execution::status_query_name(run))
    } else {
        let status = run.status.execution_status();
        (status as i32, status_name(status))
    }
}

fn status_name(status: enums::WorkflowExecutionStatus) -> &'static str {
    STATUSES
        .iter()
        .find(|(_, s)| *s == status)
        .map_or("Unspecified", |(name, _)| name)
}

/// A run as the evaluator sees it; its custom search attributes are decoded on first use.
struct RunView<'s> {
    state: &'s MutableState,
    custom: OnceCell<HashMap<String, common::Payload>>,
}

impl<'s> RunView<'s> {
    fn new(state: &'s MutableState) -> RunView<'s> {
        RunView {
            state,
            custom: OnceCell::new(),
        }
    }

    /// The values the run holds in `field` (several for a keyword list); None if it has none.
    fn values(&self, field: &Field) -> Option<Vec<Value>> {
        let s = self.state;
        let system = match field {
            Field::System(system) => *system,
            Field::Custom { name, kind } => {
                let custom = self.custom.get_or_init(|| {
                    proto::decode_opt::<common::SearchAttributes>(&s.search_attributes)
                        .map(|a| a.indexed_fields)
                        .unwrap_or_default()
                });
                return custom
                    .get(name)
                    .and_then(|payload| payload_values(payload, *kind));
            }
        };
        let text = |text: &String| Some(Value::Str(text.clone()));
        let value = match system {
            SystemField::WorkflowId => text(&s.workflow_id),
            SystemField::RunId => text(&s.run_id),
            SystemField::WorkflowType => text(&s.workflow_type),
            SystemField::TaskQueue => text(&s.task_queue),
            SystemField::ExecutionStatus => Some(Value::Str(status_key(s).1.to_string())),
            SystemField::StartTime => Some(Value::Time(s.start_time_ns)),
            SystemField::ExecutionTime => Some(Value::Time(s.execution_time_ns)),
            SystemField::CloseTime => s.close_time_ns.map(Value::Time),
            // As DescribeWorkflowExecution and the list rows report it.
            SystemField::ExecutionDuration => s
                .close_time_ns
                .map(|close| Value::Int(close.saturating_sub(s.start_time_ns))),
            SystemField::HistoryLength | SystemField::StateTransitionCount => {
                Some(Value::Int(s.next_event_id - 1))
            }
            SystemField::HistorySizeBytes => Some(Value::Int(s.history_size_bytes)),
            SystemField::ParentWorkflowId => s.parent.as_ref().and_then(|p| text(&p.workflow_id)),
            SystemField::ParentRunId => s.parent.as_ref().and_then(|p| text(&p.run_id)),
            SystemField::RootWorkflowId => {
                text(s.parent.as_ref().map_or(&s.workflow_id, |p| &p.root.0))
            }
            SystemField::RootRunId => text(s.parent.as_ref().map_or(&s.run_id, |p| &p.root.1)),
            SystemField::NamespaceDivision => {
                s.namespace_division().map(|d| Value::Str(d.to_string()))
            }
            SystemField::WorkerDeployment => s
                .versioning
                .as_deref()
                .and_then(|v| v.search_version())
                .map(|(deployment, _)| Value::Str(deployment.to_string())),
            SystemField::WorkerDeploymentVersion => s
                .versioning
                .as_deref()
                .and_then(|v| v.search_version())
                .map(|(deployment, build_id)| Value::Str(format!("{deployment}:{build_id}"))),
            SystemField::VersioningBehavior => s
                .versioning
                .as_deref()
                .and_then(|v| v.search_behavior())
                .map(|b| Value::Str(b.to_string())),
            SystemField::ActivityId => s
                .activity_execution
                .as_deref()
                .and_then(|e| text(&e.activity_id)),
            SystemField::ActivityType => {
                activity_execution::activity(s).and_then(|a| text(&a.activity_type))
            }
        };
        value.map(|value| vec![value])
    }

    fn first_value(&self, field: &Field) -> Option<Value> {
        self.values(field)?.into_iter().next()
    }
}

/// The values of a custom search attribute's payload (JSON, as the SDKs encode them); None for
/// a null payload.
fn payload_values(payload: &common::Payload, kind: Kind) -> Option<Vec<Value>> {
    if payload.metadata.get("encoding").map(Vec::as_slice) == Some(b"binary/null") {
        return None;
    }
    let items = match serde_json::from_slice::<serde_json::Value>(&payload.data).ok()? {
        serde_json::Value::Null => return None,
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    Some(
        items
            .iter()
            .filter_map(|item| json_value(item, kind))
            .collect(),
    )
}

fn json_value(item: &serde_json::Value, kind: Kind) -> Option<Value> {
    use serde_json::Value as J;
    match (kind, item) {
        (Kind::Keyword | Kind::KeywordList | Kind::Text, J::String(s)) => {
            Some(Value::Str(s.clone()))
        }
        (Kind::Int, J::Number(n)) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_f64().map(Value::Float)),
        (Kind::Double, J::Number(n)) => n.as_f64().map(Value::Float),
        (Kind::Bool, J::Bool(b)) => Some(Value::Bool(*b)),
        (Kind::Datetime, J::String(s)) => parse_datetime(s).map(Value::Time),
        _ => None,
    }
}

/// Nanoseconds since the epoch of an RFC 3339 time (`2026-01-02T15:04:05.123Z`, any offset;
/// a bare date is midnight UTC), saturating outside the years 1678-2262.
fn parse_datetime(text: &str) -> Option<i64> {
    let time: prost_wkt_types::Timestamp = text.trim().parse().ok()?;
    Some(proto::timestamp_ns(&time))
}

/// Nanoseconds of an ExecutionDuration operand, in the forms Temporal accepts: an integer
/// (nanoseconds), a Go duration (`1h30m`, `1.5s`, `300ms`, `2d`; units ns, us, µs, ms, s, m, h,
/// d) or `hh:mm:ss`.
fn parse_duration(text: &str) -> Option<i64> {
    if let Ok(ns) = text.parse::<i64>() {
        return Some(ns);
    }
    crate::engine::go_duration::parse_ns(text)
        .ok()
        .or_else(|| parse_clock_duration(text))
}

fn parse_clock_duration(text: &str) -> Option<i64> {
    let mut parts = text.split(':');
    let (hours, minutes, seconds) = (parts.next()?, parts.next()?, parts.next()?);
    let number = |s: &str| -> Option<i64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (minutes, seconds) = (number(minutes)?, number(seconds)?);
    if parts.next().is_some() || minutes > 59 || seconds > 59 {
        return None;
    }
    number(hours)?
        .checked_mul(3_600)?
        .checked_add(minutes * 60 + seconds)?
        .checked_mul(1_000_000_000)
}

/// The lower-cased words of a Text value (split at anything not a letter or digit, as
/// Elasticsearch's standard analyzer roughly does).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Expression tree and evaluation

/// SQL's three-valued truth: a condition on a missing value is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn of(value: bool) -> Truth {
        if value {
            Truth::True
        } else {
            Truth::False
        }
    }
}

impl std::ops::Not for Truth {
    type Output = Truth;

    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

/// A boolean expression over a run.
#[derive(Clone, Debug, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Condition(Condition),
}

impl Expr {
    fn eval(&self, run: &RunView) -> Truth {
        match self {
            Expr::And(terms) => {
                let mut truth = Truth::True;
                for term in terms {
                    match term.eval(run) {
                        Truth::False => return Truth::False,
                        Truth::Unknown => truth = Truth::Unknown,
                        Truth::True => {}
                    }
                }
                truth
            }
            Expr::Or(terms) => {
                let mut truth = Truth::False;
                for term in terms {
                    match term.eval(run) {
                        Truth::True => return Truth::True,
                        Truth::Unknown => truth = Truth::Unknown,
                        Truth::False => {}
                    }
                }
                truth
            }
            Expr::Not(inner) => !inner.eval(run),
            Expr::Condition(condition) => condition.eval(run),
        }
    }
}

/// One condition on a field; `negated` for `!=`, NOT IN, NOT BETWEEN, NOT STARTS_WITH and IS
/// NOT NULL.
#[derive(Clone, Debug, PartialEq)]
struct Condition {
    field: Field,
    test: Test,
    negated: bool,
}

impl Condition {
    fn eval(&self, run: &RunView) -> Truth {
        let values = run.values(&self.field);
        let truth = match (&self.test, values) {
            (Test::IsNull, values) => Truth::of(values.is_none_or(|v| v.is_empty())),
            (_, None) if !self.field.kind().holds_set() => Truth::Unknown,
            (test, values) => Truth::of(
                values
                    .unwrap_or_default()
                    .iter()
                    .any(|value| test.accepts(value)),
            ),
        };
        if self.negated {
            !truth
        } else {
            truth
        }
    }
}

/// What a condition asks of one of the field's values.
#[derive(Clone, Debug, PartialEq)]
enum Test {
    Equal(Value),
    Less(Value),
    LessOrEqual(Value),
    Greater(Value),
    GreaterOrEqual(Value),
    In(Vec<Value>),
    /// Inclusive at both ends.
    Between(Value, Value),
    /// A string starting with the operand (also a string: STARTS_WITH is only on Keyword).
    StartsWith(Value),
    /// A Text value sharing a word with the operand.
    SharesWord(Vec<String>),
    IsNull,
}

impl Test {
    fn accepts(&self, value: &Value) -> bool {
        let order = |operand: &Value| value.order(operand);
        match self {
            Test::Equal(operand) => order(operand) == Some(Ordering::Equal),
            Test::Less(operand) => order(operand) == Some(Ordering::Less),
            Test::LessOrEqual(operand) => order(operand).is_some_and(Ordering::is_le),
            Test::Greater(operand) => order(operand) == Some(Ordering::Greater),
            Test::GreaterOrEqual(operand) => order(operand).is_some_and(Ordering::is_ge),
            Test::In(operands) => operands
                .iter()
                .any(|operand| order(operand) == Some(Ordering::Equal)),
            Test::Between(low, high) => {
                order(low).is_some_and(Ordering::is_ge) && order(high).is_some_and(Ordering::is_le)
            }
            Test::StartsWith(prefix) => matches!(
                (value, prefix),
                (Value::Str(text), Value::Str(prefix)) if text.starts_with(prefix.as_str())
            ),
            Test::SharesWord(wanted) => match value {
                Value::Str(text) => words(text).iter().any(|word| wanted.contains(word)),
                _ => false,
            },
            Test::IsNull => false,
        }
    }
}

/// One ORDER BY term.
#[derive(Clone, Debug, PartialEq)]
struct SortKey {
    field: Field,
    descending: bool,
}

fn compare_sort_values(keys: &[SortKey], a: &[Option<Value>], b: &[Option<Value>]) -> Ordering {
    for ((key, a), b) in keys.iter().zip(a).zip(b) {
        let ordering = match (a, b) {
            (Some(a), Some(b)) => {
                let ordering = a.order(b).unwrap_or(Ordering::Equal);
                if key.descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

/// A comparison operator as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    fn symbol(self) -> &'static str {
        match self {
            Comparison::Equal => "=",
            Comparison::NotEqual => "!=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum TokenKind {
    /// A bare word: a keyword or a field name.
    Word(String),
    /// A `backticked` field name (never a keyword).
    QuotedName(String),
    /// A 'single' or "double" quoted string.
    Str(String),
    Number(String),
    Compare(Comparison),
    Open,
    Close,
    Comma,
}

#[derive(Clone, Debug, PartialEq)]
struct Token {
    kind: TokenKind,
    /// Byte offset in the query.
    at: usize,
}

/// "at position N near '...'" (N counts characters from 1), or "at the end of the query".
fn location(query: &str, at: Option<usize>) -> String {
    match at.and_then(|at| Some((query.get(..at)?, query.get(at..)?))) {
        Some((before, rest)) => {
            let near: String = rest.chars().take(20).collect();
            format!("at position {} near '{near}'", before.chars().count() + 1)
        }
        None => "at the end of the query".to_string(),
    }
}

fn malformed(query: &str, at: Option<usize>, what: impl fmt::Display) -> QueryError {
    QueryError(format!(
        "malformed SQL query: {what} {}",
        location(query, at)
    ))
}

fn tokenize(query: &str) -> Result<Vec<Token>, QueryError> {
    let lexer = Lexer {
        query,
        chars: query.char_indices().collect(),
    };
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&(at, c)) = lexer.chars.get(i) {
        let next = lexer.char_at(i + 1);
        let (kind, end) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (TokenKind::Open, i + 1),
            ')' => (TokenKind::Close, i + 1),
            ',' => (TokenKind::Comma, i + 1),
            '=' => (TokenKind::Compare(Comparison::Equal), i + 1),
            '!' if next == Some('=') => (TokenKind::Compare(Comparison::NotEqual), i + 2),
            '<' => match next {
                Some('=') => (TokenKind::Compare(Comparison::LessOrEqual), i + 2),
                Some('>') => (TokenKind::Compare(Comparison::NotEqual), i + 2),
                _ => (TokenKind::Compare(Comparison::Less), i + 1),
            },
            '>' if next == Some('=') => (TokenKind::Compare(Comparison::GreaterOrEqual), i + 2),
            '>' => (TokenKind::Compare(Comparison::Greater), i + 1),
            '\'' | '"' | '`' => lexer.quoted(i)?,
            c if c.is_ascii_digit()
                || (matches!(c, '-' | '+' | '.')
                    && next.is_some_and(|n| n.is_ascii_digit() || n == '.')) =>
            {
                lexer.number(i)?
            }
            c if c.is_ascii_alphabetic() || c == '_' => lexer.word(i),
            other => {
                let hint = if other.is_alphabetic() {
                    " (quote field names with other characters in backticks)"
                } else {
                    ""
                };
                return Err(malformed(
                    query,
                    Some(at),
                    format!("unexpected character '{other}'{hint}"),
                ));
            }
        };
        tokens.push(Token { kind, at });
        i = end;
    }
    Ok(tokens)
}

/// The query's characters, for the tokenizer; each scan takes the index of a token's first
/// character and returns the token and the index after it.
struct Lexer<'q> {
    query: &'q str,
    /// (byte offset, character).
    chars: Vec<(usize, char)>,
}

impl Lexer<'_> {
    fn char_at(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|&(_, c)| c)
    }

    fn offset(&self, i: usize) -> usize {
        self.chars.get(i).map_or(self.query.len(), |&(at, _)| at)
    }

    /// The text from character `from` up to `to`.
    fn text(&self, from: usize, to: usize) -> String {
        self.query
            .get(self.offset(from)..self.offset(to))
            .unwrap_or_default()
            .to_string()
    }

    fn digits_from(&self, mut i: usize) -> usize {
        while self.char_at(i).is_some_and(|d| d.is_ascii_digit()) {
            i += 1;
        }
        i
    }

    /// A 'single' or "double" quoted string, or a `backticked` name. The quote is escaped by
    /// doubling it; in strings, also by a backslash, with MySQL's escapes (`\n`, `\t`, ...).
    fn quoted(&self, start: usize) -> Result<(TokenKind, usize), QueryError> {
        let quote = self.char_at(start).unwrap_or('\'');
        let mut text = String::new();
        let mut i = start + 1;
        loop {
            match self.char_at(i) {
                None => {
                    let what = if quote == '`' { "name" } else { "string" };
                    return Err(malformed(
                        self.query,
                        Some(self.offset(start)),
                        format!("unterminated {what}: no closing {quote}"),
                    ));
                }
                Some(c) if c == quote && self.char_at(i + 1) == Some(quote) => {
                    text.push(quote);
                    i += 2;
                }
                Some(c) if c == quote => break,
                Some('\\') if quote != '`' => {
                    match self.char_at(i + 1) {
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        Some('r') => text.push('\r'),
                        Some('0') => text.push('\0'),
                        Some('b') => text.push('\u{8}'),
                        Some('Z') => text.push('\u{1a}'),
                        // As in MySQL, `\%` and `\_` keep their backslash.
                        Some(escaped @ ('%' | '_')) => {
                            text.push('\\');
                            text.push(escaped);
                        }
                        Some(escaped) => text.push(escaped),
                        None => {}
                    }
                    i += 2;
                }
                Some(c) => {
                    text.push(c);
                    i += 1;
                }
            }
        }
        let kind = if quote == '`' {
            TokenKind::QuotedName(text)
        } else {
            TokenKind::Str(text)
        };
        Ok((kind, i + 1))
    }

    /// A number: an optional sign, digits with an optional fraction, an optional exponent.
    fn number(&self, start: usize) -> Result<(TokenKind, usize), QueryError> {
        let mut i = start;
        if matches!(self.char_at(i), Some('-' | '+')) {
            i += 1;
        }
        let mantissa = i;
        i = self.digits_from(i);
        if self.char_at(i) == Some('.') {
            i = self.digits_from(i + 1);
        }
        let has_digits = (mantissa..i).any(|k| self.char_at(k) != Some('.'));
        if has_digits && matches!(self.char_at(i), Some('e' | 'E')) {
            let mut exponent = i + 1;
            if matches!(self.char_at(exponent), Some('+' | '-')) {
                exponent += 1;
            }
            let end = self.digits_from(exponent);
            if end > exponent {
                i = end;
            }
        }
        let glued = self
            .char_at(i)
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
        if !has_digits || glued {
            return Err(malformed(
                self.query,
                Some(self.offset(start)),
                "invalid number",
            ));
        }
        Ok((TokenKind::Number(self.text(start, i)), i))
    }

    /// A bare word: letters, digits and underscores.
    fn word(&self, start: usize) -> (TokenKind, usize) {
        let mut i = start;
        while self
            .char_at(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            i += 1;
        }
        (TokenKind::Word(self.text(start, i)), i)
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

/// Words that are never a field name or a value when bare.
const RESERVED: [&str; 10] = [
    "AND",
    "OR",
    "NOT",
    "IN",
    "BETWEEN",
    "IS",
    "NULL",
    "STARTS_WITH",
    "TRUE",
    "FALSE",
];

/// An operand as written, before it is typed against its field.
#[derive(Clone, Debug, PartialEq)]
enum Literal {
    Str(String),
    Number(String),
    Bool(bool),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(text) => write!(f, "{}", quote(text)),
            Literal::Number(number) => f.write_str(number),
            Literal::Bool(value) => write!(f, "{value}"),
        }
    }
}

/// A condition as written: its operator and operands.
enum Written {
    Compare(Comparison, Literal),
    In(Vec<Literal>),
    Between(Literal, Literal),
    StartsWith(Literal),
    IsNull,
}

impl Written {
    fn operator(&self) -> &'static str {
        match self {
            Written::Compare(comparison, _) => comparison.symbol(),
            Written::In(_) => "IN",
            Written::Between(..) => "BETWEEN",
            Written::StartsWith(_) => "STARTS_WITH",
            Written::IsNull => "IS",
        }
    }

    /// Temporal's operators per type: ordering and BETWEEN not on sets, STARTS_WITH only on
    /// Keyword, Text only `=` and `!=`.
    fn allowed_on(&self, kind: Kind) -> bool {
        match self {
            Written::IsNull | Written::Compare(Comparison::Equal | Comparison::NotEqual, _) => true,
            Written::Compare(..) => !kind.holds_set(),
            Written::In(_) => kind != Kind::Text,
            Written::Between(..) => {
                matches!(
                    kind,
                    Kind::Keyword | Kind::Int | Kind::Double | Kind::Datetime
                )
            }
            Written::StartsWith(_) => kind == Kind::Keyword,
        }
    }
}

fn parse(query: &str, custom: &SearchAttributeTypes) -> Result<ListQuery, QueryError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryError(format!(
            "the query is {} bytes long; Keel accepts at most {MAX_QUERY_BYTES}: split it into \
             several queries",
            query.len()
        )));
    }
    let tokens = tokenize(query)?;
    let names_namespace_division = tokens.iter().any(|t| {
        matches!(&t.kind, TokenKind::Word(name) | TokenKind::QuotedName(name)
            if name == SystemField::NamespaceDivision.name())
    });
    let mut parser = Parser {
        query,
        tokens,
        next: 0,
        custom,
        depth: 0,
    };
    let filter = if parser.peek().is_none() || parser.at_clause() {
        None
    } else {
        Some(parser.or_expr()?)
    };
    let mut group_by_status = false;
    if parser.at_pair("GROUP", "BY") {
        parser.next += 2;
        parser.group_by()?;
        group_by_status = true;
    }
    let mut order_by = Vec::new();
    if parser.at_pair("ORDER", "BY") {
        parser.next += 2;
        order_by = parser.order_by()?;
    }
    if let Some(token) = parser.peek() {
        if is_keyword(token, "LIMIT") {
            return Err(QueryError(format!(
                "operation is not supported: 'LIMIT' clause {} (set the request's page size \
                 instead)",
                location(query, Some(token.at))
            )));
        }
        return Err(parser.malformed_here("expected AND, OR, GROUP BY, ORDER BY or the end"));
    }
    Ok(ListQuery {
        filter,
        group_by_status,
        order_by,
        names_namespace_division,
    })
}

fn is_keyword(token: &Token, keyword: &str) -> bool {
    matches!(&token.kind, TokenKind::Word(word) if word.eq_ignore_ascii_case(keyword))
}

struct Parser<'q> {
    query: &'q str,
    tokens: Vec<Token>,
    next: usize,
    custom: &'q SearchAttributeTypes,
    /// Parentheses and NOTs open around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        self.peek().is_some_and(|token| is_keyword(token, keyword))
    }

    fn at_pair(&self, first: &str, second: &str) -> bool {
        self.at_keyword(first)
            && self
                .tokens
                .get(self.next + 1)
                .is_some_and(|token| is_keyword(token, second))
    }

    fn at_clause(&self) -> bool {
        self.at_pair("GROUP", "BY") || self.at_pair("ORDER", "BY")
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.at_keyword(keyword);
        if found {
            self.next += 1;
        }
        found
    }

    fn malformed_here(&self, what: impl fmt::Display) -> QueryError {
        malformed(self.query, self.peek().map(|t| t.at), what)
    }

    fn expect_keyword(&mut self, keyword: &str, context: &str) -> Result<(), QueryError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.malformed_here(format!("expected {keyword} {context}")))
        }
    }

    fn expect(&mut self, kind: &TokenKind, what: &str) -> Result<(), QueryError> {
        if self.peek().map(|t| &t.kind) == Some(kind) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.malformed_here(format!("expected {what}")))
        }
    }

    /// Runs `parse` one nesting level deeper, refusing to go past [`MAX_NESTING`].
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<Expr, QueryError>,
    ) -> Result<Expr, QueryError> {
        if self.depth >= MAX_NESTING {
            return Err(self.malformed_here(format!(
                "more than {MAX_NESTING} nested parentheses or NOTs"
            )));
        }
        self.depth += 1;
        let expr = parse(self);
        self.depth -= 1;
        expr
    }

    fn or_expr(&mut self) -> Result<Expr, QueryError> {
        self.joined("OR", Self::and_expr, Expr::Or)
    }

    fn and_expr(&mut self) -> Result<Expr, QueryError> {
        self.joined("AND", Self::unary_expr, Expr::And)
    }

    /// Operands joined by `keyword`: the operand alone, or `join` of all of them.
    fn joined(
        &mut self,
        keyword: &str,
        operand: fn(&mut Self) -> Result<Expr, QueryError>,
        join: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr, QueryError> {
        let mut terms = vec![operand(self)?];
        while self.eat_keyword(keyword) {
            terms.push(operand(self)?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            join(terms)
        })
    }

    fn unary_expr(&mut self) -> Result<Expr, QueryError> {
        if self.eat_keyword("NOT") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary_expr()?))));
        }
        if self.peek().map(|t| &t.kind) == Some(&TokenKind::Open) {
            self.next += 1;
            let inner = self.nested(Self::or_expr)?;
            self.expect(&TokenKind::Close, "')' to close the '('")?;
            return Ok(inner);
        }
        self.condition().map(Expr::Condition)
    }

    /// A field name (bare or backticked) and the field it names.
    fn field(&mut self) -> Result<(Field, usize), QueryError> {
        let (name, at) = match self.peek() {
            Some(Token {
                kind: TokenKind::Word(word),
                at,
            }) if !RESERVED.iter().any(|r| word.eq_ignore_ascii_case(r)) => (word.clone(), *at),
            Some(Token {
                kind: TokenKind::QuotedName(name),
                at,
            }) => (name.clone(), *at),
            _ => return Err(self.malformed_here("expected a search attribute name")),
        };
        self.next += 1;
        let field = Field::resolve(&name, self.custom).map_err(|message| {
            QueryError(format!("{message} {}", location(self.query, Some(at))))
        })?;
        Ok((field, at))
    }

    fn condition(&mut self) -> Result<Condition, QueryError> {
        let (field, at) = self.field()?;
        let mut negated = self.eat_keyword("NOT");
        let written = match self.peek().map(|t| t.kind.clone()) {
            Some(TokenKind::Compare(comparison)) if !negated => {
                self.next += 1;
                Written::Compare(comparison, self.literal()?)
            }
            _ if self.eat_keyword("IN") => {
                self.expect(&TokenKind::Open, "'(' after IN")?;
                let mut values = vec![self.literal()?];
                while self.peek().map(|t| &t.kind) == Some(&TokenKind::Comma) {
                    self.next += 1;
                    values.push(self.literal()?);
                }
                self.expect(&TokenKind::Close, "',' or ')' in the IN list")?;
                Written::In(values)
            }
            _ if self.eat_keyword("BETWEEN") => {
                let low = self.literal()?;
                self.expect_keyword("AND", "between the bounds of BETWEEN")?;
                Written::Between(low, self.literal()?)
            }
            _ if self.eat_keyword("STARTS_WITH") => Written::StartsWith(self.literal()?),
            _ if !negated && self.eat_keyword("IS") => {
                negated = self.eat_keyword("NOT");
                self.expect_keyword("NULL", "after IS (IS NULL or IS NOT NULL)")?;
                Written::IsNull
            }
            _ => {
                let what = if negated {
                    format!(
                        "expected IN, BETWEEN or STARTS_WITH after {} NOT",
                        field.name()
                    )
                } else {
                    format!(
                        "expected an operator (=, !=, <, <=, >, >=, IN, NOT IN, BETWEEN, \
                         STARTS_WITH, IS NULL) after {}",
                        field.name()
                    )
                };
                return Err(self.malformed_here(what));
            }
        };
        typed_condition(field, written, negated)
            .map_err(|message| QueryError(format!("{message} {}", location(self.query, Some(at)))))
    }

    fn literal(&mut self) -> Result<Literal, QueryError> {
        let Some(token) = self.peek() else {
            return Err(self.malformed_here("expected a value"));
        };
        let literal = match &token.kind {
            TokenKind::Str(text) => Literal::Str(text.clone()),
            TokenKind::Number(number) => Literal::Number(number.clone()),
            TokenKind::Word(word) if word.eq_ignore_ascii_case("true") => Literal::Bool(true),
            TokenKind::Word(word) if word.eq_ignore_ascii_case("false") => Literal::Bool(false),
            TokenKind::Word(word) | TokenKind::QuotedName(word)
                if !RESERVED.iter().any(|r| word.eq_ignore_ascii_case(r)) =>
            {
                return Err(QueryError(format!(
                    "operation is not supported: column name on the right side of a comparison \
                     (did you forget to quote '{word}'?) {}",
                    location(self.query, Some(token.at))
                )));
            }
            _ => {
                return Err(self
                    .malformed_here("expected a value (a quoted string, a number, true or false)"))
            }
        };
        self.next += 1;
        Ok(literal)
    }

    /// GROUP BY's field list; only ExecutionStatus, alone, is supported (as in Temporal).
    fn group_by(&mut self) -> Result<(), QueryError> {
        let (field, at) = self.field()?;
        if self.peek().map(|t| &t.kind) == Some(&TokenKind::Comma) {
            return Err(QueryError(format!(
                "operation is not supported: 'GROUP BY' clause supports only a single field {}",
                location(self.query, self.peek().map(|t| t.at))
            )));
        }
        if field != Field::System(SystemField::ExecutionStatus) {
            return Err(QueryError(format!(
                "operation is not supported: 'GROUP BY' clause is only supported for \
                 ExecutionStatus search attribute {}",
                location(self.query, Some(at))
            )));
        }
        Ok(())
    }

    fn order_by(&mut self) -> Result<Vec<SortKey>, QueryError> {
        let mut keys = Vec::new();
        loop {
            let (field, at) = self.field()?;
            if field.kind().holds_set() {
                return Err(QueryError(format!(
                    "operation is not supported: unable to sort by search attribute type {} {}",
                    field.kind().name(),
                    location(self.query, Some(at))
                )));
            }
            let descending = self.eat_keyword("DESC");
            if !descending {
                self.eat_keyword("ASC");
            }
            keys.push(SortKey { field, descending });
            if self.peek().map(|t| &t.kind) != Some(&TokenKind::Comma) {
                return Ok(keys);
            }
            self.next += 1;
        }
    }
}

/// A written condition typed against its field: operators checked against the field's type,
/// operands converted to the field's values.
fn typed_condition(field: Field, written: Written, negated: bool) -> Result<Condition, String> {
    let kind = field.kind();
    if !written.allowed_on(kind) {
        if matches!(written, Written::Between(..)) {
            return Err(format!(
                "invalid expression: cannot do range condition on search attribute '{}' of \
                 type {}",
                field.name(),
                kind.name()
            ));
        }
        return Err(format!(
            "operation is not supported: operator '{}' not supported for {} type search \
             attribute '{}'",
            written.operator(),
            kind.name(),
            field.name()
        ));
    }
    let value = |literal: &Literal| typed_value(&field, literal);
    let (test, negated) = match &written {
        Written::Compare(Comparison::Equal, literal) => {
            (equal_test(&field, value(literal)?)?, negated)
        }
        Written::Compare(Comparison::NotEqual, literal) => {
            (equal_test(&field, value(literal)?)?, !negated)
        }
        Written::Compare(Comparison::Less, literal) => (Test::Less(value(literal)?), negated),
        Written::Compare(Comparison::LessOrEqual, literal) => {
            (Test::LessOrEqual(value(literal)?), negated)
        }
        Written::Compare(Comparison::Greater, literal) => (Test::Greater(value(literal)?), negated),
        Written::Compare(Comparison::GreaterOrEqual, literal) => {
            (Test::GreaterOrEqual(value(literal)?), negated)
        }
        Written::In(literals) => (
            Test::In(literals.iter().map(value).collect::<Result<_, _>>()?),
            negated,
        ),
        Written::Between(low, high) => (Test::Between(value(low)?, value(high)?), negated),
        Written::StartsWith(literal) => (Test::StartsWith(value(literal)?), negated),
        Written::IsNull => (Test::IsNull, negated),
    };
    Ok(Condition {
        field,
        test,
        negated,
    })
}

/// `=` on a Text attribute matches a shared word; on anything else, an equal value.
fn equal_test(field: &Field, value: Value) -> Result<Test, String> {
    match (field.kind(), value) {
        (Kind::Text, Value::Str(text)) => {
            let wanted = words(&text);
            if wanted.is_empty() {
                return Err(format!(
                    "invalid expression: no tokens found filtering on Text type search attribute \
                     {}",
                    field.name()
                ));
            }
            Ok(Test::SharesWord(wanted))
        }
        (_, value) => Ok(Test::Equal(value)),
    }
}

/// An operand converted to the type of its field, as Temporal accepts them: strings for Keyword,
/// KeywordList and Text; numbers for Int and Double; true or false for Bool; RFC 3339 strings
/// or integer nanoseconds for Datetime; status names or numbers for ExecutionStatus; durations
/// or nanoseconds for ExecutionDuration.
fn typed_value(field: &Field, literal: &Literal) -> Result<Value, String> {
    match field {
        Field::System(SystemField::ExecutionStatus) => return status_value(literal),
        Field::System(SystemField::ExecutionDuration) => return duration_value(literal),
        _ => {}
    }
    let kind = field.kind();
    let value = match (kind, literal) {
        (Kind::Keyword | Kind::KeywordList | Kind::Text, Literal::Str(text)) => {
            Some(Value::Str(text.clone()))
        }
        (Kind::Int | Kind::Double, Literal::Number(number)) => number_value(number),
        (Kind::Bool, Literal::Bool(value)) => Some(Value::Bool(*value)),
        (Kind::Datetime, Literal::Str(text)) => {
            return parse_datetime(text).map(Value::Time).ok_or_else(|| {
                format!(
                    "invalid expression: unable to parse datetime {literal} (use RFC 3339, e.g. \
                     '2026-01-02T15:04:05Z', or nanoseconds since the epoch)"
                )
            })
        }
        (Kind::Datetime, Literal::Number(number)) => number.parse().ok().map(Value::Time),
        _ => None,
    };
    value.ok_or_else(|| {
        let hint = match (kind, literal) {
            (Kind::Int | Kind::Double, Literal::Str(_)) => " (write numbers without quotes)",
            (Kind::Bool, _) => " (write true or false without quotes)",
            (_, Literal::Number(_)) => " (quote strings)",
            _ => "",
        };
        format!(
            "invalid expression: invalid value type for search attribute {} of type {}: \
             {literal}{hint}",
            field.name(),
            kind.name()
        )
    })
}

fn number_value(number: &str) -> Option<Value> {
    number.parse().ok().map(Value::Int).or_else(|| {
        number
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float)
    })
}

fn status_value(literal: &Literal) -> Result<Value, String> {
    // A standalone activity's status has one value a workflow's lacks.
    if matches!(literal, Literal::Str(text) if text == "Paused") {
        return Ok(Value::Str("Paused".into()));
    }
    let status = match literal {
        Literal::Str(text) => STATUSES
            .iter()
            .find(|(name, _)| *name == text.as_str())
            .map(|(_, status)| *status)
            .or_else(|| enums::WorkflowExecutionStatus::from_str_name(text)),
        Literal::Number(number) => number
            .parse::<i32>()
            .ok()
            .and_then(|n| enums::WorkflowExecutionStatus::try_from(n).ok()),
        Literal::Bool(_) => None,
    };
    status
        .map(|status| Value::Str(status_name(status).to_string()))
        .ok_or_else(|| {
            let names: Vec<&str> = STATUSES.iter().skip(1).map(|(name, _)| *name).collect();
            format!(
                "invalid expression: invalid ExecutionStatus value {literal} (one of {})",
                names.join(", ")
            )
        })
}

fn duration_value(literal: &Literal) -> Result<Value, String> {
    let ns = match literal {
        Literal::Str(text) | Literal::Number(text) => parse_duration(text),
        Literal::Bool(_) => None,
    };
    ns.map(Value::Int).ok_or_else(|| {
        format!(
            "invalid expression: invalid duration value for search attribute ExecutionDuration: \
             {literal} (use nanoseconds, a duration such as '1h30m' or '2.5s', or 'hh:mm:ss')"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::ParentInfo;
    use crate::engine::{new_run, Limits, RunStatus, StartArgs};

    const SEC: i64 = 1_000_000_000;
    /// 2026-01-01T00:00:00Z.
    const NEW_YEAR: i64 = 1_767_225_600 * SEC;

    fn custom() -> SearchAttributeTypes {
        use enums::IndexedValueType as T;
        [
            ("CustomKeyword", T::Keyword),
            ("CustomText", T::Text),
            ("CustomInt", T::Int),
            ("CustomDouble", T::Double),
            ("CustomBool", T::Bool),
            ("CustomDatetime", T::Datetime),
            ("CustomKeywordList", T::KeywordList),
            ("Order", T::Keyword),
        ]
        .into_iter()
        .map(|(name, kind)| (name.to_string(), kind as i32))
        .collect()
    }

    fn json_payload(json: &str) -> common::Payload {
        common::Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())]
                .into_iter()
                .collect(),
            data: json.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    /// A run of `workflow_type` started at `start_ns` with custom attributes as JSON.
    fn run(
        workflow_id: &str,
        workflow_type: &str,
        start_ns: i64,
        attributes: &[(&str, &str)],
    ) -> MutableState {
        let search_attributes = common::SearchAttributes {
            indexed_fields: attributes
                .iter()
                .map(|(name, json)| (name.to_string(), json_payload(json)))
                .collect(),
        };
        new_run(
            StartArgs {
                namespace_id: "ns".into(),
                workflow_id: workflow_id.into(),
                run_id: format!("run-{workflow_id}"),
                workflow_type: workflow_type.into(),
                task_queue: "queue".into(),
                search_attributes: Some(search_attributes),
                ..Default::default()
            },
            start_ns,
            &Limits::default(),
        )
        .map(|outcome| outcome.state)
        .unwrap_or_else(|e| panic!("start {workflow_id}: {e}"))
    }

    fn closed(mut state: MutableState, status: RunStatus, close_ns: i64) -> MutableState {
        state.status = status;
        state.close_time_ns = Some(close_ns);
        state
    }

    /// The sample runs, by workflow id: order-a (Foo, running, every custom attribute), order-b
    /// (Foo, completed after 10 s), c (Bar, failed after 1 h), d (Bar, running), e (Baz,
    /// terminated after 1 s).
    fn runs() -> Vec<MutableState> {
        vec![
            run(
                "order-a",
                "Foo",
                NEW_YEAR - 3_600 * SEC,
                &[
                    ("CustomKeyword", "\"red\""),
                    ("CustomInt", "5"),
                    ("CustomDouble", "1.5"),
                    ("CustomBool", "true"),
                    ("CustomDatetime", "\"2026-03-01T10:00:00Z\""),
                    ("CustomKeywordList", "[\"x\", \"y\"]"),
                    ("CustomText", "\"my-business-id-foobar\""),
                ],
            ),
            closed(
                run(
                    "order-b",
                    "Foo",
                    NEW_YEAR + SEC,
                    &[("CustomInt", "50"), ("CustomKeywordList", "[\"z\"]")],
                ),
                RunStatus::Completed,
                NEW_YEAR + 11 * SEC,
            ),
            closed(
                run(
                    "c",
                    "Bar",
                    NEW_YEAR + 2 * SEC,
                    &[("CustomKeyword", "\"blue\"")],
                ),
                RunStatus::Failed,
                NEW_YEAR + 3_602 * SEC,
            ),
            run(
                "d",
                "Bar",
                NEW_YEAR + 3 * SEC,
                &[
                    ("CustomBool", "false"),
                    ("TemporalChangeVersion", "[\"patch-1\", \"patch-2\"]"),
                ],
            ),
            closed(
                run("e", "Baz", NEW_YEAR + 4 * SEC, &[]),
                RunStatus::Terminated,
                NEW_YEAR + 5 * SEC,
            ),
        ]
    }

    fn parse_list(query: &str) -> Result<ListQuery, QueryError> {
        ListQuery::parse(query, &custom())
    }

    /// The workflow ids `query` selects among [`runs`], in id order.
    fn selected(query: &str) -> Vec<String> {
        let parsed = parse_list(query).unwrap_or_else(|e| panic!("{query:?}: {e}"));
        let mut ids: Vec<String> = runs()
            .into_iter()
            .filter(|state| parsed.matches(state))
            .map(|state| state.workflow_id)
            .collect();
        ids.sort();
        ids
    }

    fn error(query: &str) -> String {
        match parse_list(query) {
            Ok(parsed) => panic!("{query:?} parsed: {parsed:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn equality_on_system_fields_with_any_quoting() {
        assert_eq!(selected("WorkflowType = 'Foo'"), ["order-a", "order-b"]);
        assert_eq!(selected("WorkflowType=\"Foo\""), ["order-a", "order-b"]);
        assert_eq!(selected("`WorkflowType` = 'Bar'"), ["c", "d"]);
        assert_eq!(selected("WorkflowType != 'Foo'"), ["c", "d", "e"]);
        assert_eq!(selected("WorkflowType <> 'Foo'"), ["c", "d", "e"]);
        assert_eq!(selected("RunId = 'run-c'"), ["c"]);
        assert_eq!(selected("TaskQueue = 'queue'").len(), 5);
        assert_eq!(selected("  "), selected(""));
        assert_eq!(selected("").len(), 5);
    }

    #[test]
    fn execution_status_by_name_number_and_enum_name() {
        assert_eq!(selected("ExecutionStatus = 'Running'"), ["d", "order-a"]);
        assert_eq!(selected("ExecutionStatus = 2"), ["order-b"]);
        assert_eq!(
            selected("ExecutionStatus = 'WORKFLOW_EXECUTION_STATUS_FAILED'"),
            ["c"]
        );
        assert_eq!(
            selected("ExecutionStatus IN ('Completed', 'Failed')"),
            ["c", "order-b"]
        );
        assert_eq!(
            selected("ExecutionStatus NOT IN ('Completed', 'Failed')"),
            ["d", "e", "order-a"]
        );
        assert!(error("ExecutionStatus = 'Done'").contains("invalid ExecutionStatus value 'Done'"));
        assert!(error("ExecutionStatus = 'running'").contains("one of Running, Completed"));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_regroup() {
        assert_eq!(
            selected(
                "WorkflowType = 'Baz' OR WorkflowType = 'Foo' AND ExecutionStatus = 'Running'"
            ),
            ["e", "order-a"]
        );
        assert_eq!(
            selected(
                "(WorkflowType = 'Baz' OR WorkflowType = 'Foo') AND ExecutionStatus = 'Running'"
            ),
            ["order-a"]
        );
        assert_eq!(
            selected("(WorkflowType = 'Foo' OR WorkflowType = 'Bar') AND WorkflowId != 'd'"),
            ["c", "order-a", "order-b"]
        );
        assert_eq!(
            selected("NOT WorkflowType = 'Foo' AND NOT WorkflowType = 'Bar'"),
            ["e"]
        );
        assert_eq!(
            selected("NOT (WorkflowType = 'Foo' OR WorkflowType = 'Bar')"),
            ["e"]
        );
    }

    #[test]
    fn keywords_are_case_insensitive_and_names_are_not() {
        assert_eq!(
            selected("WorkflowType = 'Foo' and ExecutionStatus = 'Running' or WorkflowId starts_with 'e'"),
            ["e", "order-a"]
        );
        assert_eq!(selected("CloseTime is null"), ["d", "order-a"]);
        assert_eq!(
            selected("WorkflowId not in ('c', 'd') And WorkflowType between 'Bar' and 'Baz'"),
            ["e"]
        );
        let message = error("workflowType = 'Foo'");
        assert!(
            message.contains("invalid search attribute: workflowType"),
            "{message}"
        );
        assert!(message.contains("did you mean WorkflowType?"), "{message}");
    }

    #[test]
    fn starts_with_and_keyword_ranges() {
        assert_eq!(
            selected("WorkflowId STARTS_WITH 'order-'"),
            ["order-a", "order-b"]
        );
        assert_eq!(
            selected("WorkflowId NOT STARTS_WITH 'order-'"),
            ["c", "d", "e"]
        );
        assert_eq!(
            selected("WorkflowId > 'c' AND WorkflowId < 'order'"),
            ["d", "e"]
        );
        assert_eq!(
            selected("WorkflowId >= 'd' AND WorkflowId <= 'e'"),
            ["d", "e"]
        );
        assert_eq!(selected("WorkflowId BETWEEN 'c' AND 'd'"), ["c", "d"]);
        assert_eq!(
            selected("WorkflowId NOT BETWEEN 'c' AND 'd'"),
            ["e", "order-a", "order-b"]
        );
        assert!(error("StartTime STARTS_WITH '2026'").contains(
            "operator 'STARTS_WITH' not supported for Datetime type search attribute 'StartTime'"
        ));
    }

    #[test]
    fn times_compare_as_instants_in_any_offset_or_as_nanoseconds() {
        assert_eq!(
            selected("StartTime > '2026-01-01T00:00:00Z'"),
            ["c", "d", "e", "order-b"]
        );
        assert_eq!(
            selected("StartTime > '2026-01-01T01:00:00+01:00'"),
            ["c", "d", "e", "order-b"]
        );
        assert_eq!(
            selected("StartTime < '2026-01-01T00:00:00.5Z'"),
            ["order-a"]
        );
        assert_eq!(
            selected(&format!("StartTime >= {}", NEW_YEAR + 3 * SEC)),
            ["d", "e"]
        );
        assert_eq!(
            selected("CloseTime BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-01T00:00:11Z'"),
            ["e", "order-b"]
        );
        assert_eq!(
            selected("ExecutionTime <= '2026-01-01T00:00:02Z'"),
            ["c", "order-a", "order-b"]
        );
        assert_eq!(selected("CloseTime IS NOT NULL"), ["c", "e", "order-b"]);
        assert!(error("StartTime > 'yesterday'").contains("unable to parse datetime 'yesterday'"));
        assert!(error("StartTime > 1.5")
            .contains("invalid value type for search attribute StartTime of type Datetime"));
    }

    #[test]
    fn conditions_on_missing_values_are_unknown() {
        // Open runs have no CloseTime: neither the condition nor its negation holds.
        assert_eq!(
            selected("CloseTime > '2000-01-01T00:00:00Z'"),
            ["c", "e", "order-b"]
        );
        assert_eq!(
            selected("NOT CloseTime > '2000-01-01T00:00:00Z'"),
            Vec::<String>::new()
        );
        assert_eq!(selected("CustomKeyword != 'red'"), ["c"]);
        assert_eq!(
            selected("CustomKeyword = 'red' OR CloseTime > '2000-01-01T00:00:00Z'"),
            ["c", "e", "order-a", "order-b"]
        );
        assert_eq!(
            selected("NOT (CustomKeyword = 'red' AND CloseTime IS NULL)"),
            ["c", "e", "order-b"]
        );
        assert_eq!(selected("TemporalNamespaceDivision IS NULL").len(), 5);
        assert_eq!(selected("TemporalNamespaceDivision = 'x'").len(), 0);
        let names_division = |q: &str| {
            parse_list(q)
                .map(|parsed| parsed.names_namespace_division())
                .unwrap_or_else(|e| panic!("{q:?}: {e}"))
        };
        assert!(names_division(
            "`TemporalNamespaceDivision` = 'TemporalScheduler'"
        ));
        assert!(names_division("TemporalNamespaceDivision IS NOT NULL"));
        assert!(!names_division("WorkflowId = 'TemporalNamespaceDivision'"));
    }

    #[test]
    fn custom_numbers_bools_and_datetimes() {
        assert_eq!(selected("CustomInt = 5"), ["order-a"]);
        assert_eq!(selected("CustomInt > 5.5"), ["order-b"]);
        assert_eq!(selected("CustomInt >= 5 AND CustomInt < 50"), ["order-a"]);
        assert_eq!(
            selected("CustomInt BETWEEN 1 AND 100"),
            ["order-a", "order-b"]
        );
        assert_eq!(selected("CustomInt IN (1, 50)"), ["order-b"]);
        assert_eq!(selected("CustomInt != 5"), ["order-b"]);
        assert_eq!(selected("CustomDouble = 1.5"), ["order-a"]);
        assert_eq!(selected("CustomDouble > -1e3"), ["order-a"]);
        assert_eq!(selected("CustomBool = true"), ["order-a"]);
        assert_eq!(selected("CustomBool = FALSE"), ["d"]);
        assert_eq!(
            selected("CustomDatetime > '2026-02-01T00:00:00Z'"),
            ["order-a"]
        );
        assert!(error("CustomInt = '5'").contains("write numbers without quotes"));
        assert!(error("CustomBool = 'true'").contains("of type Bool"));
        assert!(error("CustomBool BETWEEN true AND false")
            .contains("cannot do range condition on search attribute 'CustomBool' of type Bool"));
        assert!(error("WorkflowId = 5").contains("quote strings"));
    }

    #[test]
    fn keyword_lists_contain_and_text_shares_words() {
        assert_eq!(selected("CustomKeywordList = 'y'"), ["order-a"]);
        assert_eq!(selected("CustomKeywordList IN ('z', 'q')"), ["order-b"]);
        // Runs without the list hold the empty list: != and NOT IN match them.
        assert_eq!(
            selected("CustomKeywordList != 'y'"),
            ["c", "d", "e", "order-b"]
        );
        assert_eq!(
            selected("CustomKeywordList NOT IN ('x', 'z')"),
            ["c", "d", "e"]
        );
        assert_eq!(selected("CustomText = 'foobar'"), ["order-a"]);
        assert_eq!(selected("CustomText = 'Business other'"), ["order-a"]);
        assert_eq!(selected("CustomText = 'foo'").len(), 0);
        assert_eq!(
            selected("CustomText != 'foobar'"),
            ["c", "d", "e", "order-b"]
        );
        assert!(error("CustomKeywordList > 'a'").contains(
            "operator '>' not supported for KeywordList type search attribute 'CustomKeywordList'"
        ));
        assert!(error("CustomText IN ('a')").contains("operator 'IN' not supported for Text type"));
        assert!(error("CustomText = ' - '")
            .contains("no tokens found filtering on Text type search attribute CustomText"));
    }

    #[test]
    fn history_duration_and_family_fields() {
        assert_eq!(selected("ExecutionDuration = '10s'"), ["order-b"]);
        assert_eq!(
            selected("ExecutionDuration > '59m' AND ExecutionDuration < '1h1m'"),
            ["c"]
        );
        assert_eq!(selected("ExecutionDuration >= '01:00:00'"), ["c"]);
        assert_eq!(selected(&format!("ExecutionDuration < {}", 2 * SEC)), ["e"]);
        assert_eq!(selected("ExecutionDuration IS NULL"), ["d", "order-a"]);
        assert!(error("ExecutionDuration > 'soon'").contains("invalid duration value"));
        assert_eq!(selected("HistoryLength = 2").len(), 5);
        assert_eq!(selected("HistorySizeBytes >= 0").len(), 5);
        assert_eq!(selected("RootWorkflowId = 'c'"), ["c"]);
        assert_eq!(selected("ParentWorkflowId IS NULL").len(), 5);

        let mut child = run("child", "Foo", NEW_YEAR, &[]);
        child.parent = Some(ParentInfo {
            namespace_id: "ns".into(),
            namespace: "default".into(),
            workflow_id: "parent".into(),
            run_id: "parent-run".into(),
            initiated_event_id: 5,
            root: ("root".into(), "root-run".into()),
        });
        let query = parse_list("ParentWorkflowId = 'parent' AND ParentRunId = 'parent-run' AND RootWorkflowId = 'root' AND RootRunId = 'root-run'")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(query.matches(&child));
    }

    #[test]
    fn durations_parse_as_temporal_reads_them() {
        assert_eq!(parse_duration("1500"), Some(1_500));
        assert_eq!(parse_duration("1h2m"), Some(3_720 * SEC));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_duration("2d"), Some(172_800 * SEC));
        assert_eq!(parse_duration("10µs"), Some(10_000));
        assert_eq!(parse_duration("-1m"), Some(-60 * SEC));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("12:00:01"), Some(43_201 * SEC));
        for bad in [
            "",
            "h",
            "1x",
            "1.s.",
            "1:2",
            "1:2:3:4",
            "00:60:00",
            "9999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn strings_take_escapes_and_doubled_quotes() {
        let kinds = |query: &str| -> Vec<TokenKind> {
            tokenize(query)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|t| t.kind)
                .collect()
        };
        assert_eq!(
            kinds(r#"'it''s' "say \"hi\"" 'a\nb' `odd name` 'back\\slash' '100\%'"#),
            [
                TokenKind::Str("it's".into()),
                TokenKind::Str("say \"hi\"".into()),
                TokenKind::Str("a\nb".into()),
                TokenKind::QuotedName("odd name".into()),
                TokenKind::Str("back\\slash".into()),
                TokenKind::Str("100\\%".into()),
            ]
        );
        assert_eq!(
            kinds("a>=-1.5e3,b<>.5)"),
            [
                TokenKind::Word("a".into()),
                TokenKind::Compare(Comparison::GreaterOrEqual),
                TokenKind::Number("-1.5e3".into()),
                TokenKind::Comma,
                TokenKind::Word("b".into()),
                TokenKind::Compare(Comparison::NotEqual),
                TokenKind::Number(".5".into()),
                TokenKind::Close,
            ]
        );
        let id = "it's a \\ test";
        assert_eq!(kinds(&quote(id)), [TokenKind::Str(id.into())]);
        assert_eq!(
            selected(&format!("WorkflowId = {}", quote("order-a"))),
            ["order-a"]
        );
    }

    #[test]
    fn malformed_queries_say_what_and_where() {
        let cases = [
            (
                "WorkflowId = 'a",
                "unterminated string: no closing ' at position 14",
            ),
            ("WorkflowId = ", "expected a value at the end of the query"),
            ("WorkflowId 'a'", "expected an operator (=, !="),
            (
                "WorkflowId = 'a' AND",
                "expected a search attribute name at the end of the query",
            ),
            (
                "(WorkflowId = 'a'",
                "expected ')' to close the '(' at the end of the query",
            ),
            (
                "WorkflowId = 'a')",
                "expected AND, OR, GROUP BY, ORDER BY or the end at position 17 near ')'",
            ),
            (
                "WorkflowId = 'a' WorkflowType = 'b'",
                "expected AND, OR, GROUP BY, ORDER BY or the end at position 18",
            ),
            ("WorkflowId IN ()", "expected a value"),
            (
                "WorkflowId IN ('a' 'b')",
                "expected ',' or ')' in the IN list",
            ),
            (
                "WorkflowId BETWEEN 'a' 'b'",
                "expected AND between the bounds of BETWEEN",
            ),
            ("WorkflowId IS 'a'", "expected NULL after IS"),
            (
                "WorkflowId NOT = 'a'",
                "expected IN, BETWEEN or STARTS_WITH after WorkflowId NOT",
            ),
            ("WorkflowId = a", "did you forget to quote 'a'?"),
            (
                "WorkflowId = 'a' # x",
                "unexpected character '#' at position 18",
            ),
            ("WorkflowId = 12ab", "invalid number at position 14"),
            (
                "Unknown = 'a'",
                "invalid search attribute: Unknown (it is neither",
            ),
            (
                "WorkflowId = 'a' LIMIT 10",
                "operation is not supported: 'LIMIT' clause",
            ),
            (
                "ORDER BY CustomText",
                "unable to sort by search attribute type Text",
            ),
        ];
        for (query, expected) in cases {
            let message = error(query);
            assert!(
                message.starts_with("invalid query: "),
                "{query:?}: {message}"
            );
            assert!(message.contains(expected), "{query:?}: {message}");
        }
    }

    #[test]
    fn length_and_nesting_are_bounded() {
        let deep = format!(
            "{}WorkflowId = 'a'{}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert!(parse_list(&deep).is_ok());
        let deeper = format!("({deep})");
        assert!(error(&deeper).contains("more than 32 nested parentheses or NOTs"));
        assert!(error(&"NOT ".repeat(MAX_NESTING + 1)).contains("nested"));
        let long = format!("WorkflowId = '{}'", "a".repeat(MAX_QUERY_BYTES));
        assert!(error(&long).contains("Keel accepts at most 32768"));
        let wide = ["WorkflowId = 'a'"; 1_000].join(" OR ");
        assert!(parse_list(&wide).is_ok());
    }

    #[test]
    fn a_field_may_be_named_like_a_clause_keyword() {
        let state = run("o", "Foo", NEW_YEAR, &[("Order", "\"first\"")]);
        assert!(parse_list("Order = 'first'").is_ok_and(|q| q.matches(&state)));
        assert!(parse_list("Order = 'first' ORDER BY Order").is_ok_and(|q| q.matches(&state)));
    }

    #[test]
    fn order_by_sorts_with_missing_values_last() {
        let order = |query: &str| -> Vec<String> {
            parse_list(query)
                .unwrap_or_else(|e| panic!("{query:?}: {e}"))
                .sort(runs())
                .into_iter()
                .map(|s| s.workflow_id)
                .collect()
        };
        assert_eq!(order(""), ["e", "d", "c", "order-b", "order-a"]);
        assert_eq!(
            order("ORDER BY StartTime"),
            ["order-a", "order-b", "c", "d", "e"]
        );
        assert_eq!(
            order("order by CloseTime desc"),
            ["c", "order-b", "e", "d", "order-a"]
        );
        assert_eq!(
            order("ORDER BY CloseTime ASC"),
            ["e", "order-b", "c", "d", "order-a"]
        );
        assert_eq!(
            order("ORDER BY WorkflowType, WorkflowId DESC"),
            ["d", "c", "e", "order-b", "order-a"]
        );
        assert_eq!(
            order("ORDER BY CustomInt DESC"),
            ["order-b", "order-a", "c", "d", "e"]
        );
    }

    #[test]
    fn group_by_execution_status_only() {
        let types = custom();
        let query = ListQuery::parse("WorkflowType != 'Baz' GROUP BY ExecutionStatus", &types)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(query.groups_by_status());
        let matching: Vec<MutableState> = runs().into_iter().filter(|s| query.matches(s)).collect();
        let groups = status_groups(&matching);
        let summary: Vec<(String, i64)> = groups
            .iter()
            .map(|g| {
                (
                    String::from_utf8_lossy(&g.group_values[0].data).into_owned(),
                    g.count,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("\"Running\"".to_string(), 2),
                ("\"Completed\"".to_string(), 1),
                ("\"Failed\"".to_string(), 1)
            ]
        );
        assert_eq!(
            groups[0].group_values[0]
                .metadata
                .get("type")
                .map(Vec::as_slice),
            Some(&b"Keyword"[..])
        );
        assert_eq!(selected("GROUP BY ExecutionStatus").len(), runs().len());
        let refuse = |q: &str| match ListQuery::parse(q, &types) {
            Ok(parsed) => panic!("{q:?} parsed: {parsed:?}"),
            Err(e) => e.to_string(),
        };
        assert!(refuse("GROUP BY WorkflowType").contains("only supported for ExecutionStatus"));
        assert!(refuse("GROUP BY ExecutionStatus, WorkflowType").contains("only a single field"));
    }

    #[test]
    fn system_attributes_list_every_workflow_system_field_and_the_predefined_ones() {
        let names: Vec<&str> = system_attributes().map(|(name, _)| name).collect();
        // All but ActivityId and ActivityType, which only lists of standalone activities have.
        assert_eq!(
            names.len(),
            SystemField::ALL.len() - 2 + predefined_attributes().count()
        );
        assert!(!names.contains(&"ActivityId"));
        assert!(
            names.contains(&"TemporalScheduledById") && names.contains(&"TemporalChangeVersion")
        );
        assert!(
            names.contains(&"ExecutionDuration") && names.contains(&"TemporalNamespaceDivision")
        );
        // A workflow's patches are queried as the keyword list they are.
        assert_eq!(selected("TemporalChangeVersion = 'patch-2'"), ["d"]);
        assert_eq!(
            selected("TemporalChangeVersion IS NULL").len(),
            runs().len() - 1
        );
        assert!(system_attributes()
            .any(|(name, kind)| name == "CloseTime" && kind == enums::IndexedValueType::Datetime));
    }
}
