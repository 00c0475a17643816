//! Instance ids: what a client may choose, and the one rule by which the runtime names what a
//! step starts.
//!
//! A step's key is `<instance>:<step>`. Operation `i` of the step's command (its only operation,
//! or branch `i` of a join or race) is `<key>` for the first and `<key>.<i>` for the others. The
//! same rule names an activity's idempotency key and a sub-orchestration's derived id (which
//! carries [`DERIVED_ID_PREFIX`] in front). The first operation keeps the bare key so that the
//! keys activities already saw stay the same; ids of children already started are stored in
//! their parent's record and never recomputed.

/// The longest instance id a client may choose, in bytes. Ids a parent derives for its
/// sub-orchestrations (`<parent>:<step>`) may be longer.
pub const MAX_ID_BYTES: usize = 256;

/// The first character of every sub-orchestration id the runtime derives (`~P:1` for the child
/// that `P` starts at its first step, `~P:1:2` for that child's own child). Ids chosen by a client
/// or with `Child::with_id` cannot start with it, so no one can take a derived id first.
pub const DERIVED_ID_PREFIX: char = '~';

/// Checks an instance id chosen by a client or given with `Child::with_id`: not empty, not
/// starting with [`DERIVED_ID_PREFIX`], no NUL byte, at most [`MAX_ID_BYTES`].
pub(crate) fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("an instance id must not be empty".into());
    }
    if id.starts_with(DERIVED_ID_PREFIX) {
        return Err(format!(
            "ids starting with `{DERIVED_ID_PREFIX}` are reserved for the sub-orchestrations the \
             runtime names"
        ));
    }
    if id.contains('\0') {
        return Err("an instance id must not contain a NUL character".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "an instance id must be at most {MAX_ID_BYTES} bytes, this one has {}",
            id.len()
        ));
    }
    Ok(())
}

/// An id short enough to print in an error.
pub(crate) fn shown_id(id: &str) -> String {
    match id.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_owned(),
    }
}

/// The key of a step: instance id and step number.
pub(crate) fn step_key(id: &str, step: u64) -> String {
    format!("{id}:{step}")
}

/// The key of operation `index` of the command issued at step `key`.
pub(crate) fn branch_key(key: &str, index: usize) -> String {
    if index == 0 { key.to_owned() } else { format!("{key}.{index}") }
}

/// The id of a sub-orchestration named after its branch key: marked with
/// [`DERIVED_ID_PREFIX`], which chosen ids cannot carry.
pub(crate) fn derived_id(branch_key: &str) -> String {
    if branch_key.starts_with(DERIVED_ID_PREFIX) {
        branch_key.to_owned()
    } else {
        format!("{DERIVED_ID_PREFIX}{branch_key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_are_named_by_one_rule() {
        let key = step_key("p", 3);
        assert_eq!(branch_key(&key, 0), "p:3");
        assert_eq!(branch_key(&key, 1), "p:3.1");
        assert_eq!(derived_id(&branch_key(&key, 0)), "~p:3");
        assert_eq!(derived_id(&branch_key(&key, 2)), "~p:3.2");
        assert_eq!(derived_id("~c:1"), "~c:1");
        assert!(validate_id("~x").is_err() && validate_id("").is_err() && validate_id("a").is_ok());
    }
}
