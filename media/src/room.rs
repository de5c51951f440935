//! Rooms: what kind of call each is, who owns it, how many may join and who may publish.
//!
//! The node defines its rooms (from the site config) with [`Rooms::define`]; the signaling
//! admits each joiner with the role its token carries. The SFU core ([`crate::sfu`]) only
//! routes; every policy decision is here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The five applications of the pilot each use their own kind of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Video mediation (天池和 and the bureau centre): mediator and parties.
    Mediation,
    /// Legal-advice hotline: one duty lawyer, one caller.
    Hotline,
    /// Community-correction check-in: one officer, one supervised person.
    Correction,
    /// Emergency command: a superior and field teams.
    Command,
    /// Conference: the province or bureau speaks, offices watch and may be given the floor.
    Conference,
}

impl RoomKind {
    /// Default participant limit of the kind. Small rooms keep a thin uplink usable: the SFU
    /// sends each participant one stream per other publisher.
    pub fn default_limit(self) -> usize {
        match self {
            RoomKind::Hotline | RoomKind::Correction => 2,
            RoomKind::Mediation => 6,
            RoomKind::Command => 16,
            RoomKind::Conference => 100,
        }
    }

    /// Whether a participant with `role` may publish in a room of this kind.
    pub fn may_publish(self, role: Role) -> bool {
        match role {
            Role::Owner | Role::Speaker => true,
            // Watching only is what a viewer role means in a conference; in the small rooms
            // every party must be seen and heard, so the role does not restrict them.
            Role::Viewer => self != RoomKind::Conference,
        }
    }
}

/// A participant's role in a room, carried by its join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the room (the mediator, the officer, the superior, the chair).
    Owner,
    /// May publish in every kind of room.
    Speaker,
    /// Watches; publishes only where the room kind requires every party to be seen.
    Viewer,
}

/// A room as the node defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPolicy {
    /// Room id, unique on the node (from the site config).
    pub id: String,
    /// What kind of call it is.
    pub kind: RoomKind,
    /// Account id of the owner (opaque; never a person's name).
    pub owner: String,
    /// Most participants at once; default [`RoomKind::default_limit`].
    pub limit: usize,
}

impl RoomPolicy {
    /// A room of `kind` with the kind's default limit.
    pub fn new(id: impl Into<String>, kind: RoomKind, owner: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind,
            owner: owner.into(),
            limit: kind.default_limit(),
        }
    }
}

/// Why a room refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// No room with that id on this node.
    #[error("no room `{room}` on this node; ask the node for a token to an existing room")]
    Unknown {
        /// The id asked for.
        room: String,
    },
    /// The room is at its limit.
    #[error("room `{room}` is full ({limit} participants); try again when someone leaves")]
    Full {
        /// The room.
        room: String,
        /// Its limit.
        limit: usize,
    },
    /// The role may not publish here.
    #[error("a {role:?} may only watch in room `{room}`")]
    MayNotPublish {
        /// The room.
        room: String,
        /// The role.
        role: Role,
    },
}

#[derive(Debug)]
struct RoomState {
    policy: RoomPolicy,
    members: HashMap<u64, Role>,
}

/// The rooms of one node and who is in them.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: HashMap<String, RoomState>,
}

impl Rooms {
    /// No rooms yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Define (or redefine) a room. Members already inside stay.
    pub fn define(&mut self, policy: RoomPolicy) {
        match self.rooms.get_mut(&policy.id) {
            Some(state) => state.policy = policy,
            None => {
                self.rooms.insert(
                    policy.id.clone(),
                    RoomState {
                        policy,
                        members: HashMap::new(),
                    },
                );
            }
        }
    }

    /// The policy of a room.
    pub fn policy(&self, room: &str) -> Option<&RoomPolicy> {
        self.rooms.get(room).map(|r| &r.policy)
    }

    /// Every defined room.
    pub fn policies(&self) -> impl Iterator<Item = &RoomPolicy> {
        self.rooms.values().map(|r| &r.policy)
    }

    /// Admit `participant` with `role`, or say why not.
    pub fn admit(&mut self, room: &str, participant: u64, role: Role) -> Result<(), RoomError> {
        let state = self.rooms.get_mut(room).ok_or_else(|| RoomError::Unknown {
            room: room.to_owned(),
        })?;
        if state.members.len() >= state.policy.limit {
            return Err(RoomError::Full {
                room: room.to_owned(),
                limit: state.policy.limit,
            });
        }
        state.members.insert(participant, role);
        Ok(())
    }

    /// Count a participant of another site (announced by the relay) as a member of `room`,
    /// whatever the limit: it was admitted by its own node. No-op for an undefined room.
    // TODO(#5): each node admits against the members it knows; two joins at two sites at the
    // same moment can pass the limit by one. The home should admit.
    pub fn add_remote(&mut self, room: &str, participant: u64, role: Role) {
        if let Some(state) = self.rooms.get_mut(room) {
            state.members.insert(participant, role);
        }
    }

    /// Check that `participant` may publish in `room`.
    pub fn check_publish(&self, room: &str, participant: u64) -> Result<(), RoomError> {
        let state = self.rooms.get(room).ok_or_else(|| RoomError::Unknown {
            room: room.to_owned(),
        })?;
        let role = state
            .members
            .get(&participant)
            .copied()
            .unwrap_or(Role::Viewer);
        if state.policy.kind.may_publish(role) {
            Ok(())
        } else {
            Err(RoomError::MayNotPublish {
                room: room.to_owned(),
                role,
            })
        }
    }

    /// Remove `participant` from `room` (no-op when absent).
    pub fn release(&mut self, room: &str, participant: u64) {
        if let Some(state) = self.rooms.get_mut(room) {
            state.members.remove(&participant);
        }
    }

    /// How many are in `room`.
    pub fn occupancy(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hotline_admits_two_and_refuses_the_third() {
        let mut rooms = Rooms::new();
        rooms.define(RoomPolicy::new("hotline-1", RoomKind::Hotline, "lawyer-7"));
        rooms.admit("hotline-1", 1, Role::Owner).unwrap();
        rooms.admit("hotline-1", 2, Role::Viewer).unwrap();
        let err = rooms.admit("hotline-1", 3, Role::Viewer).unwrap_err();
        assert_eq!(
            err,
            RoomError::Full {
                room: "hotline-1".into(),
                limit: 2
            }
        );
        rooms.release("hotline-1", 2);
        rooms.admit("hotline-1", 3, Role::Viewer).unwrap();
    }

    #[test]
    fn conference_viewers_watch_but_mediation_parties_publish() {
        let mut rooms = Rooms::new();
        rooms.define(RoomPolicy::new("conf", RoomKind::Conference, "chair"));
        rooms.define(RoomPolicy::new("med", RoomKind::Mediation, "mediator"));
        rooms.admit("conf", 1, Role::Viewer).unwrap();
        rooms.admit("conf", 2, Role::Speaker).unwrap();
        rooms.admit("med", 3, Role::Viewer).unwrap();
        assert!(matches!(
            rooms.check_publish("conf", 1),
            Err(RoomError::MayNotPublish {
                role: Role::Viewer,
                ..
            })
        ));
        rooms.check_publish("conf", 2).unwrap();
        rooms.check_publish("med", 3).unwrap();
    }

    #[test]
    fn unknown_rooms_are_named_in_the_error() {
        let mut rooms = Rooms::new();
        let err = rooms.admit("nope", 1, Role::Owner).unwrap_err();
        assert!(err.to_string().contains("`nope`"));
    }
}
