//! Every user the engine knows, found by its tag: the key, and the packed form while it sleeps.
//!
//! One map instead of two (sleeping users by key, every user by tag): at a million sleeping users
//! each map entry costs about twice its size in buckets, so the second map and the second copy of
//! every key were about a sixth of a sleeping user's memory. An entry is boxed for the same
//! reason: the buckets then hold 16 bytes a user instead of the whole entry.

use crate::engine::UserKey;
use crate::persistence::image::Packed;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};

type FxDashMap<K, V> = DashMap<K, V, rustc_hash::FxBuildHasher>;

struct Known {
    key: UserKey,
    asleep: Option<Packed>,
}

pub struct KnownUsers {
    by_tag: FxDashMap<u64, Box<Known>>,
    /// Users whose tag another known user holds. Two of a million users share a 64-bit tag with
    /// a chance of about 3 in 10^8; such a user is kept here, whole, rather than mistaken for
    /// the other.
    collided: FxDashMap<UserKey, Option<Packed>>,
    asleep: AtomicUsize,
    /// [`UserKey::tag`]; tests put a colliding one in its place.
    tag: fn(&UserKey) -> u64,
}

impl KnownUsers {
    /// Sized for `users` at once: growing by doubling would leave the smaller tables' memory
    /// behind in the allocator.
    pub fn with_capacity(users: usize) -> KnownUsers {
        KnownUsers {
            by_tag: FxDashMap::with_capacity_and_hasher(users, Default::default()),
            collided: FxDashMap::default(),
            asleep: AtomicUsize::new(0),
            tag: UserKey::tag,
        }
    }

    /// Marks the user awake and returns its packed form if it was asleep. A user not known
    /// before is known from now on.
    pub fn wake(&self, key: &UserKey) -> Option<Packed> {
        let taken = self.update(key, Option::take);
        if taken.is_some() {
            self.asleep.fetch_sub(1, Ordering::Relaxed);
        }
        taken
    }

    /// Puts the user to sleep in its packed form, or forgets it (`None`: it holds nothing).
    pub fn sleep(&self, key: &UserKey, packed: Option<Packed>) {
        let Some(packed) = packed else {
            self.forget(key);
            return;
        };
        if self.update(key, |slot| slot.replace(packed)).is_none() {
            self.asleep.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the user is awake or asleep, as opposed to never seen or forgotten.
    pub fn contains(&self, key: &UserKey) -> bool {
        let in_tags = self
            .by_tag
            .get(&(self.tag)(key))
            .is_some_and(|known| known.key == *key);
        in_tags || (!self.collided.is_empty() && self.collided.contains_key(key))
    }

    /// The users with this tag: one, except after a collision.
    pub fn keys_of(&self, tag: u64) -> Vec<UserKey> {
        let mut keys: Vec<UserKey> = self
            .by_tag
            .get(&tag)
            .map(|k| k.key.clone())
            .into_iter()
            .collect();
        if !self.collided.is_empty() {
            keys.extend(
                self.collided
                    .iter()
                    .filter(|e| (self.tag)(e.key()) == tag)
                    .map(|e| e.key().clone()),
            );
        }
        keys
    }

    pub fn asleep(&self) -> usize {
        self.asleep.load(Ordering::Relaxed)
    }

    /// Runs `f` on the user's packed form (`None` while awake), making the user known first if
    /// it is not. Locks `by_tag` before `collided`, as every method does.
    fn update<R>(&self, key: &UserKey, f: impl FnOnce(&mut Option<Packed>) -> R) -> R {
        match self.by_tag.entry((self.tag)(key)) {
            Entry::Occupied(mut known) if known.get().key == *key => f(&mut known.get_mut().asleep),
            Entry::Occupied(_) => f(&mut self.collided.entry(key.clone()).or_default()),
            Entry::Vacant(vacant) => {
                // Its tag's first holder was forgotten since it collided: it stays where it is.
                if !self.collided.is_empty() {
                    if let Some(mut slot) = self.collided.get_mut(key) {
                        return f(&mut slot);
                    }
                }
                let mut asleep = None;
                let r = f(&mut asleep);
                vacant.insert(Box::new(Known {
                    key: key.clone(),
                    asleep,
                }));
                r
            }
        }
    }

    fn forget(&self, key: &UserKey) {
        let removed = match self
            .by_tag
            .remove_if(&(self.tag)(key), |_, known| known.key == *key)
        {
            Some((_, known)) => Some(known.asleep),
            None => self.collided.remove(key).map(|(_, packed)| packed),
        };
        if let Some(Some(_)) = removed {
            self.asleep.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ids::UserId;
    use crate::engine::user::Counter;
    use crate::engine::{Mode, Ts, UserState};

    fn key(user: &str) -> UserKey {
        UserKey {
            app: "app".into(),
            mode: Mode::Live,
            user: UserId::parse(user).unwrap(),
        }
    }

    /// A user who has used `used` of a limit.
    fn packed(used: u64) -> Packed {
        let mut state = UserState::default();
        let counter = Counter {
            window: Ts(0),
            used,
            reserved: 0,
            limit_reached_noticed: false,
        };
        state
            .counters
            .insert(("pro".into(), "images".into()), counter);
        Packed::pack(&state).unwrap()
    }

    fn sorted(mut keys: Vec<UserKey>) -> Vec<String> {
        keys.sort_by(|a, b| a.user.as_str().cmp(b.user.as_str()));
        keys.iter().map(|k| k.user.as_str().to_owned()).collect()
    }

    /// Every key has the same tag, so every user after the first collides.
    fn colliding() -> KnownUsers {
        KnownUsers {
            tag: |_| 7,
            ..KnownUsers::with_capacity(0)
        }
    }

    #[test]
    fn a_user_sleeps_wakes_and_is_forgotten() {
        let known = KnownUsers::with_capacity(4);
        let (a, b) = (key("a"), key("b"));
        assert!(!known.contains(&a));
        assert_eq!(known.wake(&a), None);
        assert!(known.contains(&a) && !known.contains(&b));
        known.sleep(&a, Some(packed(1)));
        assert_eq!(known.asleep(), 1);
        assert_eq!(known.keys_of(a.tag()), vec![a.clone()]);
        assert_eq!(known.wake(&a), Some(packed(1)));
        assert_eq!((known.asleep(), known.wake(&a)), (0, None));
        known.sleep(&a, None);
        assert!(!known.contains(&a));
        assert_eq!(known.keys_of(a.tag()), vec![]);
    }

    #[test]
    fn users_whose_tags_collide_keep_their_own_state() {
        let known = colliding();
        let (a, b, c) = (key("a"), key("b"), key("c"));
        known.sleep(&a, Some(packed(1)));
        known.sleep(&b, Some(packed(2)));
        assert_eq!(known.wake(&c), None);
        assert_eq!(known.asleep(), 2);
        assert_eq!(sorted(known.keys_of(7)), ["a", "b", "c"]);
        // The first holder of the tag is forgotten: the others are still found, once each.
        assert_eq!(known.wake(&a), Some(packed(1)));
        known.sleep(&a, None);
        assert!(!known.contains(&a) && known.contains(&b) && known.contains(&c));
        known.sleep(&c, Some(packed(3)));
        assert_eq!(sorted(known.keys_of(7)), ["b", "c"]);
        assert_eq!(known.wake(&b), Some(packed(2)));
        assert_eq!(known.wake(&c), Some(packed(3)));
        assert_eq!(known.asleep(), 0);
        // A new user now takes the free tag.
        let d = key("d");
        known.sleep(&d, Some(packed(4)));
        assert_eq!(known.keys_of(7).len(), 3);
        assert_eq!(known.wake(&d), Some(packed(4)));
    }
}
