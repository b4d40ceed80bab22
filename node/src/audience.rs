//! Who may see one user's presence, resolved at one moment from their setting (everyone,
//! contacts, nobody) and their contacts. Pushes of presence go only to watchers it admits;
//! reads by others answer `unknown`. A user always sees their own presence.

use std::collections::HashSet;

use kith_proto::{ServerName, UserId};

/// The users admitted to a user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Anyone.
    Everyone,
    /// Only these users (the user themself is always among them).
    Only(HashSet<UserId>),
    /// Anyone but these users: the complement of [`Audience::Only`], for telling the others
    /// that they no longer see anything.
    AllBut(HashSet<UserId>),
}

impl Audience {
    /// `subject` and the `users` they share their presence with.
    pub fn only(subject: &UserId, users: impl IntoIterator<Item = UserId>) -> Self {
        let mut admitted: HashSet<UserId> = users.into_iter().collect();
        admitted.insert(subject.clone());
        Self::Only(admitted)
    }

    /// What another node said: `None` is everyone, a list is those users of this node
    /// (and the subject).
    pub fn from_wire(subject: &UserId, users: Option<Vec<UserId>>) -> Self {
        match users {
            None => Self::Everyone,
            Some(users) => Self::only(subject, users),
        }
    }

    /// Whether `viewer` may see the presence.
    pub fn admits(&self, viewer: &UserId) -> bool {
        match self {
            Self::Everyone => true,
            Self::Only(users) => users.contains(viewer),
            Self::AllBut(users) => !users.contains(viewer),
        }
    }

    /// Those not admitted.
    #[must_use]
    pub fn complement(&self) -> Self {
        match self {
            Self::Everyone => Self::Only(HashSet::new()),
            Self::Only(users) => Self::AllBut(users.clone()),
            Self::AllBut(users) => Self::Only(users.clone()),
        }
    }

    /// The part of it on `server`, as a presence envelope to that node carries it: `None` for
    /// everyone, else the admitted users of that node (possibly none).
    pub fn on(&self, server: &ServerName) -> Option<Vec<UserId>> {
        match self {
            Self::Everyone => None,
            Self::Only(users) => Some(users.iter().filter(|u| u.is_on(server)).cloned().collect()),
            // Never sent: only used to tell local watchers they lost sight.
            Self::AllBut(_) => Some(Vec::new()),
        }
    }

    /// For the instances' wire: `None` for everyone, else the admitted users.
    pub fn to_wire(&self) -> (Option<Vec<UserId>>, bool) {
        match self {
            Self::Everyone => (None, false),
            Self::Only(users) => (Some(users.iter().cloned().collect()), false),
            Self::AllBut(users) => (Some(users.iter().cloned().collect()), true),
        }
    }

    /// Reads [`Audience::to_wire`] back.
    pub fn read_wire(users: Option<Vec<UserId>>, inverted: bool) -> Self {
        match (users, inverted) {
            (None, _) => Self::Everyone,
            (Some(users), false) => Self::Only(users.into_iter().collect()),
            (Some(users), true) => Self::AllBut(users.into_iter().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_contacts_and_the_subject_are_admitted() {
        let (alice, bob, carol) = (user("alice@a"), user("bob@b"), user("carol@a"));
        let audience = Audience::only(&alice, [bob.clone()]);
        assert!(audience.admits(&alice) && audience.admits(&bob) && !audience.admits(&carol));
        assert!(audience.complement().admits(&carol) && !audience.complement().admits(&bob));
        assert_eq!(audience.on(&bob.server_name()), Some(vec![bob.clone()]));
        assert_eq!(Audience::Everyone.on(&bob.server_name()), None);
        let (list, inverted) = audience.complement().to_wire();
        assert_eq!(Audience::read_wire(list, inverted), audience.complement());
    }
}
