//! [`HashedStr`]: a string that carries its hash.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use rustc_hash::FxHasher;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;

/// An inline string (a [`SmolStr`]) with its hash, computed once when it is made.
///
/// Every click's visitor and url are keys of several hash tables and exchanges on their way
/// through the job (pre-aggregation, merging, sessions, distinct counts, routing to workers):
/// hashing them there, byte by byte, was one of the largest costs of a run. A `HashedStr` hashes
/// its bytes once; hashing it again only feeds the stored hash to the hasher, and two strings with
/// different hashes compare unequal without looking at their bytes.
///
/// Equality is the strings' equality; order is the strings' order (rows sort by it), so the
/// stored hash never shows in any result.
///
/// # Examples
/// ```
/// use std::collections::HashSet;
/// use clickpulse_job::hashed::HashedStr;
/// let a = HashedStr::new("/news");
/// assert_eq!(a, HashedStr::new("/news"));
/// assert!(a < HashedStr::new("/sports"));
/// assert_eq!(a.as_str(), "/news");
/// let set: HashSet<HashedStr> = ["/a", "/b", "/a"].into_iter().map(HashedStr::new).collect();
/// assert_eq!(set.len(), 2);
/// ```
#[derive(Clone)]
pub struct HashedStr {
    hash: u64,
    text: SmolStr,
}

impl HashedStr {
    /// `text` with its hash.
    pub fn new(text: &str) -> HashedStr {
        HashedStr {
            hash: hash_of(text),
            text: SmolStr::new(text),
        }
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }
}

/// The hash of `text`: FxHash of its bytes, as the tables hashed the strings themselves.
fn hash_of(text: &str) -> u64 {
    let mut hasher = FxHasher::default();
    text.hash(&mut hasher);
    hasher.finish()
}

impl From<SmolStr> for HashedStr {
    fn from(text: SmolStr) -> HashedStr {
        HashedStr {
            hash: hash_of(&text),
            text,
        }
    }
}

impl From<&str> for HashedStr {
    fn from(text: &str) -> HashedStr {
        HashedStr::new(text)
    }
}

impl Deref for HashedStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for HashedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Hash for HashedStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for HashedStr {
    fn eq(&self, other: &HashedStr) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for HashedStr {}

impl PartialEq<str> for HashedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HashedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Ord for HashedStr {
    fn cmp(&self, other: &HashedStr) -> Ordering {
        self.text.cmp(&other.text)
    }
}

impl PartialOrd for HashedStr {
    fn partial_cmp(&self, other: &HashedStr) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for HashedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HashedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for HashedStr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HashedStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HashedStr, D::Error> {
        SmolStr::deserialize(deserializer).map(HashedStr::from)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;
    use rustc_hash::FxHashMap;

    use super::*;

    #[test]
    fn strings_with_the_same_hash_still_compare_by_their_bytes() {
        let a = HashedStr::new("/news");
        let forged = HashedStr {
            hash: a.hash,
            text: SmolStr::new("/sports"),
        };
        assert_ne!(a, forged);
        assert_eq!(a, HashedStr::new("/news"));
        let set: std::collections::HashSet<HashedStr> = [a.clone(), forged, a].into();
        assert_eq!(set.len(), 2);
    }

    proptest! {
        /// Equality, order and table lookups agree with the plain strings', and a string made
        /// in either way (or read back from JSON) equals itself made the other way.
        #[test]
        fn hashed_strings_behave_like_their_strings(
            words in prop::collection::vec("[a-c/]{0,3}|[a-z]{20,40}", 1..40)
        ) {
            let hashed: Vec<HashedStr> = words.iter().map(|w| HashedStr::new(w)).collect();
            for (a, wa) in hashed.iter().zip(&words) {
                prop_assert_eq!(a.as_str(), wa.as_str());
                prop_assert_eq!(a, &HashedStr::from(SmolStr::new(wa)));
                let json = serde_json::to_string(a).unwrap();
                prop_assert_eq!(&json, &serde_json::to_string(wa).unwrap());
                prop_assert_eq!(&serde_json::from_str::<HashedStr>(&json).unwrap(), a);
                for (b, wb) in hashed.iter().zip(&words) {
                    prop_assert_eq!(a == b, wa == wb);
                    prop_assert_eq!(a.cmp(b), wa.cmp(wb));
                }
            }
            let mut table: FxHashMap<HashedStr, usize> = FxHashMap::default();
            let mut model: HashMap<&str, usize> = HashMap::new();
            for (h, w) in hashed.iter().zip(&words) {
                *table.entry(h.clone()).or_default() += 1;
                *model.entry(w.as_str()).or_default() += 1;
            }
            prop_assert_eq!(table.len(), model.len());
            for (h, n) in &table {
                prop_assert_eq!(model.get(h.as_str()), Some(n));
            }
            let sorted: Vec<&str> = hashed.iter().collect::<BTreeSet<_>>().into_iter().map(|h| h.as_str()).collect();
            let model_sorted: Vec<&str> = words.iter().map(String::as_str).collect::<BTreeSet<_>>().into_iter().collect();
            prop_assert_eq!(sorted, model_sorted);
        }
    }
}
