//! Starts user actors: one arbiter (thread) per core, actors spread round-robin over them.

use super::user_actor::UserActor;
use actix::{Actor, Addr, ArbiterHandle};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Supervisor {
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl Supervisor {
    /// Starts an actix system with `threads` arbiters on threads of its own.
    pub fn start(threads: usize) -> Supervisor {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("actors".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async {
                    let arbiters: Vec<_> =
                        (0..threads.max(1)).map(|_| actix::Arbiter::new()).collect();
                    let handles = arbiters.iter().map(|a| a.handle()).collect::<Vec<_>>();
                    sender
                        .send(handles)
                        .expect("supervisor waits for its arbiters");
                    // The arbiters live as long as the system: keep them out of drop's reach.
                    std::mem::forget(arbiters);
                });
                system.run().expect("actor system stopped with an error");
            })
            .expect("spawn the actor system thread");
        let arbiters = receiver.recv().expect("actor system started");
        Supervisor {
            arbiters,
            next: AtomicUsize::new(0),
        }
    }

    pub fn spawn(&self, actor: UserActor) -> Addr<UserActor> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        UserActor::start_in_arbiter(&self.arbiters[i], move |_| actor)
    }
}
