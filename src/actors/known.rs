//! Every user the engine knows, found by its tag: the key, and the packed form while it sleeps.
//!
//! One map instead of two (sleeping users by key, every user by tag): at a million sleeping users
//! each map entry costs about twice its size in buckets, so the second map and the second copy of
//! every key were about a sixth of a sleeping user's memory. An entry is one block of the
//! long-lived heap (see [`super::long_lived`]) holding the key's strings and the packed bytes:
//! 16 bytes in the buckets, and no small allocations left among an awake user's.

use super::long_lived::LongLived;
use crate::engine::ids::UserId;
use crate::engine::{Mode, Name, UserKey, UserState};
use crate::persistence::CodecError;
use crate::persistence::image::Packed;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};

type FxDashMap<K, V> = DashMap<K, V, rustc_hash::FxBuildHasher>;

pub struct KnownUsers {
    by_tag: FxDashMap<u64, Known>,
    /// Users whose tag another known user holds. Two of a million users share a 64-bit tag with
    /// a chance of about 3 in 10^8; such a user is kept here, whole, rather than mistaken for
    /// the other.
    collided: FxDashMap<UserKey, Known>,
    asleep: AtomicUsize,
    /// [`UserKey::tag`]; tests put a colliding one in its place.
    tag: fn(&UserKey) -> u64,
}

/// A sleeping user's packed form, taken out when it wakes.
pub struct Asleep(Known);

impl Asleep {
    pub fn unpack(&self) -> Result<UserState, CodecError> {
        Packed::unpack_bytes(
            self.0
                .packed()
                .expect("an asleep entry holds its packed form"),
        )
    }
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
    /// before is known from now on. Locks `by_tag` before `collided`, as every method does.
    pub fn wake(&self, key: &UserKey) -> Option<Asleep> {
        let woken = match self.by_tag.entry((self.tag)(key)) {
            Entry::Occupied(mut known) if known.get().is(key) => known.get_mut().wake(key),
            Entry::Occupied(_) => self
                .collided
                .entry(key.clone())
                .or_insert_with(|| Known::new(key, None))
                .wake(key),
            // The tag's first holder may have been forgotten since this user collided with it.
            Entry::Vacant(vacant) => match self.collided_mut(key) {
                Some(mut known) => known.wake(key),
                None => {
                    vacant.insert(Known::new(key, None));
                    None
                }
            },
        };
        if woken.is_some() {
            self.asleep.fetch_sub(1, Ordering::Relaxed);
        }
        woken
    }

    /// Puts the user to sleep in its packed form, or forgets it (`None`: it holds nothing).
    pub fn sleep(&self, key: &UserKey, packed: Option<&Packed>) {
        let Some(packed) = packed else {
            self.forget(key);
            return;
        };
        let asleep = Known::new(key, Some(packed.parts()));
        let was_asleep = match self.by_tag.entry((self.tag)(key)) {
            Entry::Occupied(mut known) if known.get().is(key) => {
                std::mem::replace(known.get_mut(), asleep).is_asleep()
            }
            Entry::Occupied(_) => match self.collided.entry(key.clone()) {
                Entry::Occupied(mut known) => {
                    std::mem::replace(known.get_mut(), asleep).is_asleep()
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(asleep);
                    false
                }
            },
            Entry::Vacant(vacant) => match self.collided_mut(key) {
                Some(mut known) => std::mem::replace(&mut *known, asleep).is_asleep(),
                None => {
                    vacant.insert(asleep);
                    false
                }
            },
        };
        if !was_asleep {
            self.asleep.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the user is awake or asleep, as opposed to never seen or forgotten.
    pub fn contains(&self, key: &UserKey) -> bool {
        let in_tags = self
            .by_tag
            .get(&(self.tag)(key))
            .is_some_and(|known| known.is(key));
        in_tags || (!self.collided.is_empty() && self.collided.contains_key(key))
    }

    /// The users with this tag: one, except after a collision.
    pub fn keys_of(&self, tag: u64) -> Vec<UserKey> {
        let mut keys: Vec<UserKey> = self
            .by_tag
            .get(&tag)
            .map(|k| k.value().key())
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

    fn collided_mut(
        &self,
        key: &UserKey,
    ) -> Option<dashmap::mapref::one::RefMut<'_, UserKey, Known>> {
        if self.collided.is_empty() {
            return None;
        }
        self.collided.get_mut(key)
    }

    fn forget(&self, key: &UserKey) {
        let removed = match self
            .by_tag
            .remove_if(&(self.tag)(key), |_, known| known.is(key))
        {
            Some((_, known)) => Some(known),
            None => self.collided.remove(key).map(|(_, known)| known),
        };
        if removed.is_some_and(|known| known.is_asleep()) {
            self.asleep.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One known user as a single block: mode (1 byte), asleep (1), the lengths of the app id and
/// of the user id (2 each, little-endian), the two ids, then the packed form while asleep.
struct Known(LongLived);

const HEADER: usize = 6;

impl Known {
    /// `packed`: the packed form's parts, joined here (see [`Packed::parts`]).
    fn new(key: &UserKey, packed: Option<[&[u8]; 3]>) -> Known {
        let (app, user) = (key.app.as_bytes(), key.user.as_str().as_bytes());
        let app_len = u16::try_from(app.len()).expect("app ids are at most 64 bytes");
        let user_len = u16::try_from(user.len()).expect("user ids are at most 128 bytes");
        let [a0, a1] = app_len.to_le_bytes();
        let [u0, u1] = user_len.to_le_bytes();
        let header = [key.mode as u8, u8::from(packed.is_some()), a0, a1, u0, u1];
        let [a, b, c] = packed.unwrap_or_default();
        Known(LongLived::concat(&[&header, app, user, a, b, c]))
    }

    fn ids(&self) -> (&[u8], &[u8]) {
        let b = &self.0;
        let app_len = usize::from(u16::from_le_bytes([b[2], b[3]]));
        let user_len = usize::from(u16::from_le_bytes([b[4], b[5]]));
        let (app, rest) = b[HEADER..].split_at(app_len);
        (app, &rest[..user_len])
    }

    fn mode(&self) -> Mode {
        if self.0[0] == Mode::Live as u8 {
            Mode::Live
        } else {
            Mode::Test
        }
    }

    fn is(&self, key: &UserKey) -> bool {
        let (app, user) = self.ids();
        self.mode() == key.mode && app == key.app.as_bytes() && user == key.user.as_str().as_bytes()
    }

    fn key(&self) -> UserKey {
        let (app, user) = self.ids();
        let text = |b: &[u8]| std::str::from_utf8(b).expect("ids are ASCII").to_owned();
        UserKey {
            app: Name::from(text(app)),
            mode: self.mode(),
            user: UserId::parse(&text(user)).expect("a known user's id was valid"),
        }
    }

    fn is_asleep(&self) -> bool {
        self.0[1] == 1
    }

    fn packed(&self) -> Option<&[u8]> {
        let (app, user) = self.ids();
        self.is_asleep()
            .then(|| &self.0[HEADER + app.len() + user.len()..])
    }

    /// Becomes the awake entry of `key`, returning the asleep one it was, if it was.
    fn wake(&mut self, key: &UserKey) -> Option<Asleep> {
        self.is_asleep()
            .then(|| Asleep(std::mem::replace(self, Known::new(key, None))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::user_key;
    use crate::engine::user::Counter;
    use crate::engine::{Ts, UserState};

    /// What waking the user found: the limit's use it was put to sleep with.
    fn woke(known: &KnownUsers, key: &UserKey) -> Option<u64> {
        known
            .wake(key)
            .map(|asleep| asleep.unpack().unwrap().counters[&("pro".into(), "images".into())].used)
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
    fn an_entry_takes_16_bytes_in_the_buckets() {
        assert_eq!(size_of::<(u64, Known)>(), 16);
    }

    #[test]
    fn a_user_sleeps_wakes_and_is_forgotten() {
        let known = KnownUsers::with_capacity(4);
        let (a, b) = (user_key("a"), user_key("b"));
        assert!(!known.contains(&a));
        assert_eq!(woke(&known, &a), None);
        assert!(known.contains(&a) && !known.contains(&b));
        known.sleep(&a, Some(&packed(1)));
        assert_eq!(known.asleep(), 1);
        assert_eq!(known.keys_of(a.tag()), vec![a.clone()]);
        assert_eq!(woke(&known, &a), Some(1));
        assert_eq!((known.asleep(), woke(&known, &a)), (0, None));
        known.sleep(&a, None);
        assert!(!known.contains(&a));
        assert_eq!(known.keys_of(a.tag()), vec![]);
    }

    #[test]
    fn users_whose_tags_collide_keep_their_own_state() {
        let known = colliding();
        let (a, b, c) = (user_key("a"), user_key("b"), user_key("c"));
        known.sleep(&a, Some(&packed(1)));
        known.sleep(&b, Some(&packed(2)));
        assert_eq!(woke(&known, &c), None);
        assert_eq!(known.asleep(), 2);
        assert_eq!(sorted(known.keys_of(7)), ["a", "b", "c"]);
        // The first holder of the tag is forgotten: the others are still found, once each.
        assert_eq!(woke(&known, &a), Some(1));
        known.sleep(&a, None);
        assert!(!known.contains(&a) && known.contains(&b) && known.contains(&c));
        known.sleep(&c, Some(&packed(3)));
        assert_eq!(sorted(known.keys_of(7)), ["b", "c"]);
        assert_eq!(woke(&known, &b), Some(2));
        assert_eq!(woke(&known, &c), Some(3));
        assert_eq!(known.asleep(), 0);
        // A new user now takes the free tag.
        let d = user_key("d");
        known.sleep(&d, Some(&packed(4)));
        assert_eq!(known.keys_of(7).len(), 3);
        assert_eq!(woke(&known, &d), Some(4));
    }
}
