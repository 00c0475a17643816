//! The effects file the examples append to (`--effects FILE`): one record per line,
//! `activity instance key .`, written with a leading newline so that a record a kill cut short
//! stays alone on its line, without the end mark.

#![allow(dead_code, reason = "each harness uses part of this module")]

use std::path::Path;

/// The complete record of an effects-file line (`activity instance key .`), without its end
/// mark; `None` for a blank line or one a kill cut short.
pub fn effect_record(line: &str) -> Option<&str> {
    line.strip_suffix(" .").filter(|r| r.split(' ').count() == 3)
}

/// The records of an effects file: `(activity, instance, key)`.
pub fn effects(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(effect_record)
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some((p.next()?.to_owned(), p.next()?.to_owned(), p.next()?.to_owned()))
        })
        .collect()
}
