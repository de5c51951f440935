//! Record scopes: which site may hold which records.
//!
//! The roster gives every site a list of scope patterns: an exact scope name
//! (`correction/office-1`), a prefix pattern ending in `/*` (`correction/*`), or `*` for
//! everything. A record's payload travels only to sites whose patterns allow its scope; the
//! sender withholds it and the receiver keeps only the header when it arrives anyway.

/// True when `patterns` allow a site to hold records of `scope`.
pub fn allows<S: AsRef<str>>(patterns: &[S], scope: &str) -> bool {
    patterns.iter().any(|p| pattern_allows(p.as_ref(), scope))
}

fn pattern_allows(p: &str, scope: &str) -> bool {
    if p == "*" {
        return true;
    }
    match p.strip_suffix("/*") {
        Some(prefix) => {
            scope.len() > prefix.len() + 1
                && scope.starts_with(prefix)
                && scope.as_bytes()[prefix.len()] == b'/'
        }
        None => p == scope,
    }
}

/// True when a site with patterns `a` may hold everything a site with patterns `b` may hold.
/// Used to pick catch-up sources: a source that covers us never has to withhold from us.
pub fn covers<A: AsRef<str>, B: AsRef<str>>(a: &[A], b: &[B]) -> bool {
    b.iter().all(|p| {
        let p = p.as_ref();
        if p == "*" {
            a.iter().any(|q| q.as_ref() == "*")
        } else if let Some(prefix) = p.strip_suffix("/*") {
            a.iter().any(|q| {
                let q = q.as_ref();
                q == "*" || q == p || pattern_allows(q, prefix) && q.ends_with("/*")
            })
        } else {
            allows(a, p)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(allows(&["*"], "correction/office-1"));
        assert!(allows(&["correction/*"], "correction/office-1"));
        assert!(!allows(&["correction/*"], "correction"));
        assert!(!allows(&["correction/*"], "correctionx/a"));
        assert!(allows(
            &["public", "correction/office-1"],
            "correction/office-1"
        ));
        assert!(!allows(&["public", "mediation"], "correction/office-1"));
        let none: [&str; 0] = [];
        assert!(!allows(&none, "public"));
    }

    #[test]
    fn coverage() {
        assert!(covers(&["*"], &["public", "correction/*"]));
        assert!(covers(
            &["public", "correction/*"],
            &["public", "correction/office-2"]
        ));
        assert!(!covers(
            &["public", "correction/office-1"],
            &["public", "correction/office-2"]
        ));
        assert!(!covers(&["public"], &["*"]));
        assert!(covers(&["correction/*"], &["correction/*"]));
    }
}
