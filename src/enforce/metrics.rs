//! Counters of the reconciler for `/metrics`: device actions by kind and outcome, and
//! alerts by kind. Process-wide (one reconciler per process), like the broker's.

use crate::domain::enforcement::{AlertKind, DeviceAction};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const ACTIONS: [DeviceAction; 6] = [
    DeviceAction::PowerOn,
    DeviceAction::PowerOff,
    DeviceAction::Heartbeat,
    DeviceAction::Block,
    DeviceAction::Unblock,
    DeviceAction::Standby,
];

static ACTED: [[AtomicU64; 2]; 6] = [const { [const { AtomicU64::new(0) }; 2] }; 6];
static ALERTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

fn action_slot(a: DeviceAction) -> usize {
    ACTIONS.iter().position(|x| *x == a).unwrap_or(0)
}

fn alert_slot(a: AlertKind) -> usize {
    AlertKind::ALL.iter().position(|x| *x == a).unwrap_or(0)
}

pub fn action(a: DeviceAction, ok: bool) {
    ACTED[action_slot(a)][usize::from(!ok)].fetch_add(1, Relaxed);
}

pub fn alert(a: AlertKind) {
    ALERTS[alert_slot(a)].fetch_add(1, Relaxed);
}

/// `(action, outcome, count)` for every action and outcome.
pub fn actions() -> Vec<(&'static str, &'static str, u64)> {
    ACTIONS
        .iter()
        .flat_map(|a| {
            let slot = &ACTED[action_slot(*a)];
            [
                (a.as_str(), "done", slot[0].load(Relaxed)),
                (a.as_str(), "failed", slot[1].load(Relaxed)),
            ]
        })
        .collect()
}

/// `(alert kind, count)` for every kind.
pub fn alerts() -> Vec<(&'static str, u64)> {
    AlertKind::ALL
        .iter()
        .map(|k| (k.as_str(), ALERTS[alert_slot(*k)].load(Relaxed)))
        .collect()
}
