//! A subject trie ("sublist", as in nats-server) for the in-process bus.
//!
//! Subscriptions are stored by the tokens of their pattern, with separate branches for `*` and
//! `>`, so that finding the subscriptions matching a published subject costs about the number
//! of tokens in the subject, not the number of subscriptions (an edge holds one subscription
//! per active room, thousands of them). Not synchronised: the caller wraps it in a lock.

use std::collections::HashMap;

/// One stored subscription: its id (to remove it) and what to deliver to.
struct Entry<T> {
    id: u64,
    value: T,
}

/// A trie node: the subscriptions whose pattern ends here, and the branches below.
struct Node<T> {
    /// Children for literal tokens.
    literal: HashMap<Box<str>, Node<T>>,
    /// Child for a `*` token.
    star: Option<Box<Node<T>>>,
    /// Child for a trailing `>`; only its own subscriptions are used (it has no children).
    full: Option<Box<Node<T>>>,
    /// Plain subscriptions ending here.
    plain: Vec<Entry<T>>,
    /// Queue subscriptions ending here, by group (few groups per node, so a list).
    queues: Vec<(Box<str>, Vec<Entry<T>>)>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            literal: HashMap::new(),
            star: None,
            full: None,
            plain: Vec::new(),
            queues: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.full.is_none()
            && self.plain.is_empty()
            && self.queues.is_empty()
    }
}

/// The subscriptions matching one subject: every plain one, and per queue group its members
/// (of which the caller picks one).
pub(crate) struct Matches<'a, T> {
    /// Plain subscriptions; each gets a copy.
    pub(crate) plain: Vec<&'a T>,
    /// Queue groups with their matching members; each group gets one copy.
    pub(crate) groups: Vec<(&'a str, Vec<&'a T>)>,
}

impl<'a, T> Matches<'a, T> {
    fn add(&mut self, node: &'a Node<T>) {
        self.plain.extend(node.plain.iter().map(|e| &e.value));
        for (name, members) in &node.queues {
            let values = members.iter().map(|e| &e.value);
            match self.groups.iter_mut().find(|(n, _)| *n == &**name) {
                Some((_, found)) => found.extend(values),
                None => self.groups.push((name, values.collect())),
            }
        }
    }

    /// Whether anything matched at all.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }
}

/// The trie of all subscriptions of one in-process bus.
pub(crate) struct Sublist<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for Sublist<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> Sublist<T> {
    /// Adds subscription `id` on a validated `pattern`, in queue `group` if given.
    pub(crate) fn insert(&mut self, pattern: &str, group: Option<&str>, id: u64, value: T) {
        let mut node = &mut self.root;
        for token in pattern.split('.') {
            node = match token {
                "*" => node.star.get_or_insert_with(Box::default),
                ">" => node.full.get_or_insert_with(Box::default),
                t => node.literal.entry(t.into()).or_default(),
            };
        }
        let entry = Entry { id, value };
        match group {
            None => node.plain.push(entry),
            Some(group) => match node.queues.iter_mut().find(|(n, _)| &**n == group) {
                Some((_, members)) => members.push(entry),
                None => node.queues.push((group.into(), vec![entry])),
            },
        }
        self.len += 1;
    }

    /// Removes subscription `id` made with `pattern` and `group`, pruning emptied branches;
    /// returns its value, or `None` if it was not there (already removed).
    pub(crate) fn remove(&mut self, pattern: &str, group: Option<&str>, id: u64) -> Option<T> {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let removed = remove_in(&mut self.root, &tokens, group, id);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The subscriptions whose pattern matches the (literal) `subject`.
    pub(crate) fn matches(&self, subject: &str) -> Matches<'_, T> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut out = Matches {
            plain: Vec::new(),
            groups: Vec::new(),
        };
        collect(&self.root, &tokens, &mut out);
        out
    }

    /// How many subscriptions are stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

fn collect<'a, T>(node: &'a Node<T>, tokens: &[&str], out: &mut Matches<'a, T>) {
    let Some((first, rest)) = tokens.split_first() else {
        out.add(node);
        return;
    };
    if let Some(full) = &node.full {
        out.add(full);
    }
    if let Some(child) = node.literal.get(*first) {
        collect(child, rest, out);
    }
    if let Some(star) = &node.star {
        collect(star, rest, out);
    }
}

fn remove_in<T>(node: &mut Node<T>, tokens: &[&str], group: Option<&str>, id: u64) -> Option<T> {
    let Some((first, rest)) = tokens.split_first() else {
        return remove_entry(node, group, id);
    };
    match *first {
        "*" => {
            let child = node.star.as_mut()?;
            let removed = remove_in(child, rest, group, id);
            if child.is_empty() {
                node.star = None;
            }
            removed
        }
        ">" => {
            let child = node.full.as_mut()?;
            let removed = remove_in(child, rest, group, id);
            if child.is_empty() {
                node.full = None;
            }
            removed
        }
        t => {
            let child = node.literal.get_mut(t)?;
            let removed = remove_in(child, rest, group, id);
            if child.is_empty() {
                node.literal.remove(t);
            }
            removed
        }
    }
}

fn remove_entry<T>(node: &mut Node<T>, group: Option<&str>, id: u64) -> Option<T> {
    fn take<T>(entries: &mut Vec<Entry<T>>, id: u64) -> Option<T> {
        let at = entries.iter().position(|e| e.id == id)?;
        Some(entries.swap_remove(at).value)
    }
    match group {
        None => take(&mut node.plain, id),
        Some(group) => {
            let at = node.queues.iter().position(|(n, _)| &**n == group)?;
            let removed = take(&mut node.queues[at].1, id);
            if node.queues[at].1.is_empty() {
                node.queues.swap_remove(at);
            }
            removed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject;

    fn plain_ids(list: &Sublist<u64>, subject: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = list.matches(subject).plain.into_iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn agrees_with_token_matching() {
        let patterns = [
            "a", "a.b", "a.c", "a.*", "*.b", "a.>", ">", "*", "*.>", "a.b.c", "a.*.c", "*.*.*",
            "x.>",
        ];
        let subjects = [
            "a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.x.c", "a.b.d", "x", "x.y",
        ];
        let mut list = Sublist::default();
        for (id, p) in patterns.iter().enumerate() {
            list.insert(p, None, id as u64, id as u64);
        }
        assert_eq!(list.len(), patterns.len());
        for s in subjects {
            let expected: Vec<u64> = (0..patterns.len() as u64)
                .filter(|&i| subject::matches(patterns[i as usize], s))
                .collect();
            assert_eq!(plain_ids(&list, s), expected, "subject {s}");
        }
    }

    #[test]
    fn remove_prunes_and_is_idempotent() {
        let mut list = Sublist::default();
        list.insert("a.*.c", None, 1, 1);
        list.insert("a.>", None, 2, 2);
        list.insert("a.b.c", Some("g"), 3, 3);
        assert_eq!(list.remove("a.*.c", None, 1), Some(1));
        assert_eq!(list.remove("a.*.c", None, 1), None);
        assert_eq!(list.remove("a.>", None, 9), None);
        assert_eq!(list.remove("a.b.c", None, 3), None, "wrong group");
        assert_eq!(list.remove("a.b.c", Some("g"), 3), Some(3));
        assert_eq!(list.remove("a.>", None, 2), Some(2));
        assert_eq!(list.len(), 0);
        assert!(list.root.is_empty(), "all branches pruned");
    }

    #[test]
    fn queue_groups_are_collected_per_group_across_patterns() {
        let mut list = Sublist::default();
        list.insert("q.a", Some("g1"), 1, 1);
        list.insert("q.*", Some("g1"), 2, 2);
        list.insert("q.>", Some("g2"), 3, 3);
        list.insert("q.a", None, 4, 4);
        list.insert("q.b", Some("g1"), 5, 5);
        let m = list.matches("q.a");
        assert_eq!(m.plain, vec![&4]);
        let mut groups: Vec<(&str, Vec<u64>)> = m
            .groups
            .into_iter()
            .map(|(g, v)| {
                let mut v: Vec<u64> = v.into_iter().copied().collect();
                v.sort_unstable();
                (g, v)
            })
            .collect();
        groups.sort();
        assert_eq!(groups, vec![("g1", vec![1, 2]), ("g2", vec![3])]);
        assert!(list.matches("r.a").is_empty());
    }
}
