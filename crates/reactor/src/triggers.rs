//! System event triggers: code run around the reactor's startup and
//! shutdown (Twisted's `addSystemEventTrigger`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::panics;
use crate::reactor::Reactor;
use crate::timer_queue::Callback;

/// The reactor's life events that triggers can attach to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SystemEvent {
    /// [`Reactor::run`] is starting.
    Startup,
    /// The reactor is stopping: [`Reactor::stop`] was called, or SIGINT or
    /// SIGTERM arrived.
    Shutdown,
}

/// When, relative to the event's own work, a trigger runs.
///
/// For [`SystemEvent::Shutdown`] the reactor's own work happens in
/// `During`: listening ports stop and open connections close (each
/// protocol hearing `connection_lost`). `Before` triggers still see every
/// connection open; `After` triggers see them all closed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Phase {
    /// Before the event's work.
    Before,
    /// Alongside the event's work.
    During,
    /// After the event's work.
    After,
}

/// Identifies a trigger, to remove it with
/// [`Reactor::remove_system_event_trigger`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TriggerId(u64);

type TriggerFn = Rc<RefCell<dyn FnMut(&Reactor)>>;

struct Trigger {
    id: TriggerId,
    phase: Phase,
    event: SystemEvent,
    function: TriggerFn,
}

#[derive(Default)]
pub(crate) struct Triggers {
    list: RefCell<Vec<Trigger>>,
    next_id: Cell<u64>,
    when_running: RefCell<Vec<Callback>>,
}

impl Triggers {
    pub(crate) fn add(
        &self,
        phase: Phase,
        event: SystemEvent,
        function: impl FnMut(&Reactor) + 'static,
    ) -> TriggerId {
        let id = TriggerId(self.next_id.get());
        self.next_id.set(id.0 + 1);
        self.list.borrow_mut().push(Trigger {
            id,
            phase,
            event,
            function: Rc::new(RefCell::new(function)),
        });
        id
    }

    pub(crate) fn remove(&self, id: TriggerId) -> bool {
        let mut list = self.list.borrow_mut();
        let before = list.len();
        list.retain(|trigger| trigger.id != id);
        list.len() != before
    }

    pub(crate) fn add_when_running(&self, function: Callback) {
        self.when_running.borrow_mut().push(function);
    }

    /// Runs the triggers of one phase of one event, in the order they were
    /// added. Triggers added meanwhile wait for the next time; a trigger
    /// removed meanwhile (by an earlier one) does not run. A trigger that
    /// panics is logged and the others still run (the crate's panic
    /// policy).
    pub(crate) fn fire(&self, reactor: &Reactor, event: SystemEvent, phase: Phase) {
        let due: Vec<(TriggerId, TriggerFn)> = self
            .list
            .borrow()
            .iter()
            .filter(|t| t.event == event && t.phase == phase)
            .map(|t| (t.id, t.function.clone()))
            .collect();
        for (id, function) in due {
            let still_there = self.list.borrow().iter().any(|t| t.id == id);
            if still_there {
                if let Ok(mut function) = function.try_borrow_mut() {
                    panics::isolate(reactor, "a system event trigger", || (*function)(reactor));
                }
            }
        }
        if event == SystemEvent::Startup && phase == Phase::After {
            let calls = std::mem::take(&mut *self.when_running.borrow_mut());
            for call in calls {
                panics::isolate(reactor, "a call_when_running call", || call(reactor));
            }
        }
    }

    /// Drops every trigger (the reactor is going away).
    pub(crate) fn clear(&mut self) {
        self.list.get_mut().clear();
        self.when_running.get_mut().clear();
    }
}
