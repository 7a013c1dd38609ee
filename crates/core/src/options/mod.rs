//! Typed options with mitmproxy's names: a registry the core fills and addons extend in
//! `load`, settable from `name=value` strings.

mod defaults;
mod value;

use std::collections::{BTreeMap, BTreeSet};

pub use defaults::core_options;
pub use value::{OptionType, OptionValue, parse_size};

/// An option's declaration: name, type, default, help.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionSpec {
    /// The option's name (`listen_port`).
    pub name: String,
    /// What values it takes.
    pub typ: OptionType,
    /// Its value when nobody set it.
    pub default: OptionValue,
    /// One line of help.
    pub help: String,
    /// The allowed values of a string option, if restricted.
    pub choices: Option<Vec<String>>,
}

impl OptionSpec {
    /// Declares an option; its type is the default's.
    pub fn new(name: impl Into<String>, default: OptionValue, help: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            typ: default.typ(),
            default,
            help: help.into(),
            choices: None,
        }
    }

    /// Declares an optional string option (default `None`).
    pub fn optional(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, OptionValue::OptStr(None), help)
    }

    /// Restricts a string option to `choices`.
    pub fn with_choices<S: Into<String>>(mut self, choices: impl IntoIterator<Item = S>) -> Self {
        self.choices = Some(choices.into_iter().map(Into::into).collect());
        self
    }
}

/// Why an option could not be declared or set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// No option has that name.
    #[error("unknown option {name:?}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    Unknown {
        /// The name given.
        name: String,
        /// The closest known name, if any is close.
        suggestion: Option<String>,
    },
    /// The value does not fit the option's type or choices.
    #[error("bad value {value:?} for option {name}: expected {expected}")]
    BadValue {
        /// The option.
        name: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A `name=value` spec could not be split.
    #[error("bad option spec {0:?}: expected name=value")]
    BadSpec(String),
    /// Two declarations of one name disagree on the type.
    #[error("option {name} is already declared as {existing}, cannot redeclare it as {new}")]
    Conflict {
        /// The option.
        name: String,
        /// Its existing type.
        existing: OptionType,
        /// The type asked for.
        new: OptionType,
    },
    /// An addon refused the new value in `configure`; the old value was kept.
    #[error("option {name}: {reason}")]
    Rejected {
        /// The option refused.
        name: String,
        /// Why.
        reason: String,
    },
}

impl OptionsError {
    /// An addon's refusal of `name`'s new value, for `configure` to return.
    pub fn rejected(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Rejected {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    spec: OptionSpec,
    value: OptionValue,
    /// Given a value by [`Options::set`] (a flag, `--set`, the config file), even one equal
    /// to the default.
    given: bool,
}

/// The option registry and current values.
///
/// The addon manager owns the live copy and publishes immutable snapshots (`Arc<Options>`):
/// a layer or addon reads a snapshot without a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    entries: BTreeMap<String, Entry>,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// The core options with their defaults.
    pub fn new() -> Self {
        let mut o = Self::empty();
        for spec in core_options() {
            // Core names are distinct by construction.
            let _ = o.add(spec);
        }
        o
    }

    /// A registry with no options at all.
    pub fn empty() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }

    /// Declares an option. Declaring an existing name again with the same type is allowed
    /// (the first declaration stays); another type is an error.
    pub fn add(&mut self, spec: OptionSpec) -> Result<(), OptionsError> {
        if let Some(e) = self.entries.get(&spec.name) {
            if e.spec.typ != spec.typ {
                return Err(OptionsError::Conflict {
                    name: spec.name,
                    existing: e.spec.typ,
                    new: spec.typ,
                });
            }
            return Ok(());
        }
        let value = spec.default.clone();
        self.entries.insert(
            spec.name.clone(),
            Entry {
                spec,
                value,
                given: false,
            },
        );
        Ok(())
    }

    /// Whether `name` is declared.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Whether `name` was given a value (by [`set`](Self::set), [`set_specs`](Self::set_specs),
    /// a flag or the config file), even one equal to its default: `-p 8080 -m socks5` asks
    /// for port 8080, where `-m socks5` alone listens on SOCKS's 1080.
    pub fn is_given(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.given)
    }

    /// All option names, sorted.
    pub fn names(&self) -> BTreeSet<String> {
        self.entries.keys().cloned().collect()
    }

    /// The declarations, sorted by name.
    pub fn specs(&self) -> impl Iterator<Item = &OptionSpec> {
        self.entries.values().map(|e| &e.spec)
    }

    /// The current value of `name`.
    pub fn get(&self, name: &str) -> Option<&OptionValue> {
        self.entries.get(name).map(|e| &e.value)
    }

    /// A boolean option (false when unknown or of another type).
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Some(OptionValue::Bool(true)))
    }

    /// An integer option (0 when unknown or of another type).
    pub fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(OptionValue::Int(i)) => *i,
            _ => 0,
        }
    }

    /// A string option, or an optional string that is set.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(OptionValue::Str(s)) => Some(s),
            Some(OptionValue::OptStr(s)) => s.as_deref(),
            _ => None,
        }
    }

    /// A sequence option (empty when unknown or of another type).
    pub fn seq(&self, name: &str) -> &[String] {
        match self.get(name) {
            Some(OptionValue::Seq(v)) => v,
            _ => &[],
        }
    }

    /// A size option such as `stream_large_bodies=1m`, in bytes; `None` when unset.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.str(name).and_then(|s| parse_size(s).ok())
    }

    fn unknown(&self, name: &str) -> OptionsError {
        let suggestion = self
            .entries
            .keys()
            .map(|k| (value::edit_distance(k, name), k))
            .filter(|(d, k)| *d <= 3.max(k.len() / 3))
            .min()
            .map(|(_, k)| k.clone());
        OptionsError::Unknown {
            name: name.to_owned(),
            suggestion,
        }
    }

    /// Parses `text` as a value of option `name` (does not set it).
    pub fn parse(&self, name: &str, text: &str) -> Result<OptionValue, OptionsError> {
        let e = self.entries.get(name).ok_or_else(|| self.unknown(name))?;
        let v =
            OptionValue::parse(e.spec.typ, text).map_err(|expected| OptionsError::BadValue {
                name: name.to_owned(),
                value: text.to_owned(),
                expected,
            })?;
        self.check_choices(&e.spec, &v)?;
        Ok(v)
    }

    fn check_choices(&self, spec: &OptionSpec, v: &OptionValue) -> Result<(), OptionsError> {
        let Some(choices) = &spec.choices else {
            return Ok(());
        };
        let bad = match v {
            OptionValue::Str(s) => Some(s.as_str()).filter(|s| !choices.iter().any(|c| c == s)),
            OptionValue::OptStr(Some(s)) => {
                Some(s.as_str()).filter(|s| !choices.iter().any(|c| c == s))
            }
            _ => None,
        };
        match bad {
            Some(s) => Err(OptionsError::BadValue {
                name: spec.name.clone(),
                value: s.to_owned(),
                expected: format!("one of {}", choices.join(", ")),
            }),
            None => Ok(()),
        }
    }

    /// Sets `name` to `value`; returns whether it changed.
    pub fn set(&mut self, name: &str, value: OptionValue) -> Result<bool, OptionsError> {
        let spec = match self.entries.get(name) {
            Some(e) => e.spec.clone(),
            None => return Err(self.unknown(name)),
        };
        if value.typ() != spec.typ {
            return Err(OptionsError::BadValue {
                name: name.to_owned(),
                value: value.to_string(),
                expected: spec.typ.to_string(),
            });
        }
        self.check_choices(&spec, &value)?;
        let e = self
            .entries
            .get_mut(name)
            .ok_or_else(|| OptionsError::BadSpec(name.into()))?;
        let changed = e.value != value;
        e.value = value;
        e.given = true;
        Ok(changed)
    }

    /// Parses `name=value` specs (as `--set` takes them) into values, without setting them.
    /// A sequence option named several times collects every value, in order; `name` alone
    /// means `true` for a boolean; `name=` clears an optional string or a sequence.
    pub fn parse_specs<S: AsRef<str>>(
        &self,
        specs: &[S],
    ) -> Result<Vec<(String, OptionValue)>, OptionsError> {
        let mut out: Vec<(String, OptionValue)> = Vec::new();
        for spec in specs {
            let spec = spec.as_ref();
            let (name, text) = match spec.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v)),
                None => (spec.trim(), None),
            };
            if name.is_empty() {
                return Err(OptionsError::BadSpec(spec.to_owned()));
            }
            let e = self.entries.get(name).ok_or_else(|| self.unknown(name))?;
            let text = match (text, e.spec.typ) {
                (Some(t), _) => t,
                (None, OptionType::Bool) => "true",
                (None, _) => return Err(OptionsError::BadSpec(spec.to_owned())),
            };
            let v = self.parse(name, text)?;
            match (out.iter_mut().find(|(n, _)| n == name), v) {
                (Some((_, OptionValue::Seq(acc))), OptionValue::Seq(more)) => acc.extend(more),
                (Some((_, slot)), v) => *slot = v,
                (None, v) => out.push((name.to_owned(), v)),
            }
        }
        Ok(out)
    }

    /// Parses and sets `name=value` specs; returns the names whose value changed. Nothing is
    /// set when any spec is bad.
    pub fn set_specs<S: AsRef<str>>(
        &mut self,
        specs: &[S],
    ) -> Result<BTreeSet<String>, OptionsError> {
        let values = self.parse_specs(specs)?;
        let mut next = self.clone();
        let mut changed = BTreeSet::new();
        let toggled = values.iter().any(|(n, _)| n == "intercept_active");
        for (n, v) in values {
            if next.set(&n, v)? {
                changed.insert(n);
            }
        }
        // As mitmproxy's intercept addon: setting the intercept filter turns
        // `intercept_active` on (off when cleared), so that the toggle reads true and
        // setting it to false afterwards is a change.
        if changed.contains("intercept") && !toggled && next.contains("intercept_active") {
            let on = next.str("intercept").is_some_and(|e| !e.trim().is_empty());
            if next.set("intercept_active", OptionValue::Bool(on))? {
                changed.insert("intercept_active".to_owned());
            }
        }
        *self = next;
        Ok(changed)
    }

    /// A listing of every option: name, type, default, current value if changed, help.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for e in self.entries.values() {
            let s = &e.spec;
            out.push_str(&format!("{}: {} (default: {})", s.name, s.typ, s.default));
            if e.value != s.default {
                out.push_str(&format!(" [set: {}]", e.value));
            }
            if let Some(c) = &s.choices {
                out.push_str(&format!(" [choices: {}]", c.join(", ")));
            }
            out.push_str(&format!("\n    {}\n", s.help));
        }
        out
    }
}
