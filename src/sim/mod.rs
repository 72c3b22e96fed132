//! Simulators of bank hosts and wallets (being written).
