//! Runnable programs built on Torsion; see the `examples/` folder.
