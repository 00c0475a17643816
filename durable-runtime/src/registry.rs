//! What this process can run: registered orchestrations (by name and version) and activities,
//! and the instances that wait for a registration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::activity::{ActivityRegistry, ErasedActivity};
use crate::orchestration::{ErasedOrchestration, Registry};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registered orchestrations by name and version.
type Orchestrations = HashMap<(&'static str, u32), Arc<dyn ErasedOrchestration>>;

pub(crate) struct Registered {
    orchestrations: RwLock<Orchestrations>,
    activities: RwLock<ActivityRegistry>,
    /// Instances parked because their orchestration is not registered, by orchestration name.
    unregistered: Mutex<HashMap<String, Vec<String>>>,
    /// Instances whose pending call names an activity this process does not know, by
    /// activity: they wait for it to be registered rather than fail the call.
    awaiting_activity: Mutex<HashMap<String, Vec<String>>>,
}

impl Registered {
    pub(crate) fn new(registry: Registry) -> Self {
        Registered {
            orchestrations: RwLock::new(registry.orchestrations),
            activities: RwLock::new(registry.activities),
            unregistered: Mutex::new(HashMap::new()),
            awaiting_activity: Mutex::new(HashMap::new()),
        }
    }

    /// Adds what `registry` knows; `replace` replaces registrations of the same names. Returns
    /// the instances that waited for one of them, to be woken.
    pub(crate) fn adopt(&self, mut registry: Registry, replace: bool) -> Vec<String> {
        if !replace {
            // Every step hands over what it used: most of it is known already, and a read lock
            // keeps steps of different instances from queueing behind each other.
            if let Ok(a) = self.activities.read() {
                registry.activities.by_name.retain(|name, _| !a.by_name.contains_key(name));
            }
            if let Ok(o) = self.orchestrations.read() {
                registry.orchestrations.retain(|key, _| !o.contains_key(key));
            }
            if registry.activities.by_name.is_empty() && registry.orchestrations.is_empty() {
                return Vec::new();
            }
        }
        let mut woken = Vec::new();
        let mut added: Vec<&'static str> = Vec::new();
        if let Ok(mut a) = self.activities.write() {
            for (name, activity) in registry.activities.by_name {
                if replace || !a.by_name.contains_key(name) {
                    a.by_name.insert(name, activity);
                    added.push(name);
                }
            }
        }
        for name in added {
            woken.extend(lock(&self.awaiting_activity).remove(name).unwrap_or_default());
        }
        let mut names: Vec<&'static str> = Vec::new();
        if let Ok(mut o) = self.orchestrations.write() {
            for (key, orchestration) in registry.orchestrations {
                if replace || !o.contains_key(&key) {
                    o.insert(key, orchestration);
                    names.push(key.0);
                }
            }
        }
        for name in names {
            woken.extend(lock(&self.unregistered).remove(name).unwrap_or_default());
        }
        woken
    }

    pub(crate) fn orchestration(
        &self,
        name: &str,
        version: u32,
    ) -> Option<Arc<dyn ErasedOrchestration>> {
        let map = self.orchestrations.read().ok()?;
        map.iter().find(|((n, v), _)| *n == name && *v == version).map(|(_, o)| o.clone())
    }

    /// The registered orchestrations: name and version, sorted.
    pub(crate) fn orchestrations(&self) -> Vec<(String, u32)> {
        let Ok(map) = self.orchestrations.read() else { return Vec::new() };
        let mut out: Vec<(String, u32)> = map.keys().map(|(n, v)| ((*n).to_owned(), *v)).collect();
        out.sort();
        out
    }

    /// The newest registered version of `name`, with its input type.
    pub(crate) fn newest(&self, name: &str) -> Option<(u32, &'static str)> {
        let map = self.orchestrations.read().ok()?;
        map.iter()
            .filter(|((n, _), _)| *n == name)
            .max_by_key(|((_, v), _)| *v)
            .map(|((_, v), o)| (*v, o.input_type()))
    }

    /// Parks instance `id` until version `version` of `orchestration` is registered; `false`
    /// (and nothing is recorded) when it was registered meanwhile: look again. Checked under
    /// the lock `adopt` drains, so a registration cannot slip between the check and the park.
    pub(crate) fn park(&self, orchestration: &str, version: u32, id: &str) -> bool {
        let mut parked = lock(&self.unregistered);
        if self.orchestration(orchestration, version).is_some() {
            return false;
        }
        parked.entry(orchestration.to_owned()).or_default().push(id.to_owned());
        true
    }

    /// The activity registered as `name`, with its static name.
    pub(crate) fn activity(&self, name: &str) -> Option<(&'static str, Arc<dyn ErasedActivity>)> {
        let a = self.activities.read().ok()?;
        a.by_name.get_key_value(name).map(|(n, act)| (*n, act.clone()))
    }

    pub(crate) fn knows_activity(&self, name: &str) -> bool {
        self.activities.read().is_ok_and(|a| a.by_name.contains_key(name))
    }

    /// Makes instance `id` wait for activity `name`; `false` (and nothing is recorded) when it
    /// was registered meanwhile: look again. Checked under the lock `adopt` drains.
    pub(crate) fn await_activity(&self, name: &str, id: &str) -> bool {
        let mut waiting = lock(&self.awaiting_activity);
        if self.knows_activity(name) {
            return false;
        }
        tracing::warn!(
            "activity `{name}` is not registered in this process; the instance waits until it is \
             (`RuntimeBuilder::activity`)"
        );
        waiting.entry(name.to_owned()).or_default().push(id.to_owned());
        true
    }
}
